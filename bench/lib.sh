# bench/lib.sh - helpers shared by run.sh and anchors.sh (sourced; they set PY, PIDS, W).

log() { printf '\n=== %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
pid_of() { cat "$PIDS/$1.pid"; }

wait_port() {  # wait until 127.0.0.1:$1 accepts connections
  local i
  for i in $(seq 1 100); do
    "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

spawn() {  # spawn NAME CMD...: background process, stdout+stderr to $W/logs/NAME.log, PID noted
  local name=$1; shift
  ( exec "$@" >"$W/logs/$name.log" 2>&1 ) &
  echo $! >"$PIDS/$name.pid"
}

stop_one() {
  local f=$PIDS/$1.pid
  [ -f "$f" ] || return 0
  local p; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}
