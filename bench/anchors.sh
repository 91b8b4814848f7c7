#!/usr/bin/env bash
# bench/anchors.sh - aimx against the stack an operator would build instead (issue 17):
# Postfix + OpenDKIM + OpenDMARC + policyd-spf delivering to a Maildir, plain Postfix, and
# the bare Twisted floor with and without fsync, side by side in one run.
#
#   bench/anchors.sh [PHASE ...]      default: setup start throughput latency stop
#
#   setup       corpus (make_corpus.py), aimx config + DKIM key, both Postfix instances
#   start       DNS stub, both Twisted floors, Postfix, Postfix + milters, aimx (this
#               checkout) and, with BEFORE=DIR, a second aimx from the checkout DIR
#               (e.g. a `git worktree` of the commit before the work): before and after
#               then run in the same interleaved rounds; BEFORE_WORKERS=N gives that
#               second aimx N worker processes (an A/B of the pool's size when DIR is
#               this checkout)
#   throughput  compare.py, 4 KiB signed and 60 KiB newsletter, then ratios.py
#   latency     latency.py, final "." -> file, 4 KiB signed, LAT_ROUNDS rounds
#   profile     (not in the default run; needs py-spy, PYSPY=path) py-spy of the daemon and
#               of its worker process while aimx takes a 4 KiB, then a 60 KiB load:
#               profile_top.py summaries in $R/profile-{4k,60k}-{daemon,worker}.txt
#   big         a fresh aimx (BIG_TREE=DIR: from that checkout) with the stall probe: 8
#               sessions of 60 KiB mail and, meanwhile,
#               one ~25 MiB message (stall_probe.py): the worst reactor stall and the
#               daemon's peak RSS growth against the big message's size
#   stop        everything started here, by PID
#   restart     (not in the default run) aimx (and BEFORE's) only: stopped and started
#               again, the anchors left running
#
# Environment (defaults): W=/tmp/aimx-anchors, KIT=<repo>/../shared/bench,
# PY=<repo>/.venv/bin/python (aimx's dependencies), ROUNDS=3, M4K=1000, M60K=500,
# LAT_ROUNDS=2, LAT_COUNT=200. Ports: DNS 5353, Postfix 2525, Twisted 2527, Twisted with
# fsync 2529, Postfix + milters 2535, aimx 2540, aimx BEFORE 2546, big 2541; 127.0.0.1 only.
# Needs root: apt-get install postfix opendkim opendmarc postfix-policyd-spf-python.
# Results: $W/results/. Run it on a quiet machine (no test suite beside it).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
KIT=$(realpath "${KIT:-$REPO/../shared/bench}")
W=${W:-/tmp/aimx-anchors}
PY=${PY:-$REPO/.venv/bin/python}
ROUNDS=${ROUNDS:-3} M4K=${M4K:-1000} M60K=${M60K:-500}
LAT_ROUNDS=${LAT_ROUNDS:-2} LAT_COUNT=${LAT_COUNT:-200}
BEFORE=${BEFORE:-}
P_DNS=5353 P_PF=2525 P_TW=2527 P_TWF=2529 P_PFM=2535 P_AIMX=2540 P_BEFORE=2546 P_BIG=2541
R=$W/results PIDS=$W/pids

pids_of() {  # the server and its worker processes, as compare.py's pid=A+B+...
  local p; p=$(pid_of "$1")
  echo "$p$(pgrep -P "$p" | sed 's/^/+/' | tr -d '\n')"
}

aimx_conf() {  # aimx_conf BASE: BASE-etc (config, DKIM key), BASE-data, BASE-run
  local base=$1
  rm -rf "$base-etc" "$base-data" "$base-run"
  mkdir -p "$base-etc" "$base-data/inbox" "$base-run"
  printf '%s\n' 'domain = "bench.test"' '[mailboxes.box]' 'address = "box@bench.test"' \
    'owner = "root"' >"$base-etc/config.toml"
  PYTHONPATH=$REPO "$PY" -c 'import sys; from aimx.store import keys; keys.generate_dkim_key(sys.argv[1])' "$base-etc"
  install -d -m 700 "$base-data/inbox/box"
}

start_aimx() {  # start_aimx NAME TREE BASE PORT [WORKERS [PROBE_FILE]]
  local name=$1 tree=$2 base=$3 port=$4
  # stored mail from an earlier run would be remembered as seen (dedup) at start-up
  find "$base-data/inbox/box" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  ( cd "$base-run" && PYTHONPATH=$tree AIMX_BENCH_NODEDUP=1 AIMX_BENCH_WORKERS=${5:-} AIMX_BENCH_PROBE=${6:-} AIMX_NAMESERVERS=127.0.0.1:$P_DNS \
      AIMX_ARGS="--bind 127.0.0.1:$port --config-dir $base-etc --data-dir $base-data --runtime-dir $base-run" \
      exec "$PY" -c 'import sys; from twisted.scripts.twistd import run; sys.argv[0] = "twistd"; sys.exit(run())' \
        -n --pidfile= -y "$HERE/aimx_bench.tac" >"$W/logs/$name.log" 2>&1 ) &
  echo $! >"$PIDS/$name.pid"
  wait_port "$port"
  # the first messages pay imports, the thread pool and the key cache
  "$PY" "$KIT/latency.py" --port "$port" --watch "$base-data/inbox/box" --count 3 --warmup 4 \
    --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
  find "$base-data/inbox/box" -mindepth 1 -maxdepth 1 ! -name '.*' -exec rm -rf {} +
}

phase_setup() {
  log "setup in $W"
  mkdir -p "$W" "$R" "$PIDS" "$W/logs"
  [ -f "$W/corpus/dkim-txt.txt" ] || "$PY" "$KIT/make_corpus.py" "$W/corpus"
  aimx_conf "$W/aimx"
  aimx_conf "$W/before"
  if [ ! -f /etc/postfix/main.cf ]; then  # postfix_anchor.sh edits the system one
    printf '%s\n' 'compatibility_level = 3.6' 'mynetworks = 127.0.0.0/8' \
      'smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination' \
      'alias_maps =' >/etc/postfix/main.cf
  fi
  if postfix status >/dev/null 2>&1; then postfix stop; fi
  "$KIT/postfix_anchor.sh" setup "$W/pf" "$P_PF"
  PY=$PY "$KIT/postfix_milter_anchor.sh" setup "$W/pfm" "$P_PFM" "$W/corpus/dkim-txt.txt"
}

phase_start() {
  log "start"
  mkdir -p "$PIDS" "$W/logs"
  rm -rf "$W/drop"; mkdir -p "$W/drop"
  spawn dns "$PY" "$KIT/dns_stub.py" --port "$P_DNS" --dkim-txt "$W/corpus/dkim-txt.txt"
  spawn twisted "$PY" "$KIT/anchor_twisted.py" --port "$P_TW" --dir "$W/drop/tw"
  spawn twisted-fsync "$PY" "$KIT/anchor_twisted.py" --port "$P_TWF" --dir "$W/drop/twf" --fsync
  for pf in pf pfm; do
    for d in new cur tmp; do install -d -o nobody -g nogroup "$W/$pf/maildir/box/$d"; done
  done
  "$KIT/postfix_anchor.sh" start
  "$KIT/postfix_milter_anchor.sh" start "$W/pfm"
  for p in $P_DNS $P_TW $P_TWF $P_PF $P_PFM; do wait_port "$p"; done
  start_aimx aimx "$REPO" "$W/aimx" "$P_AIMX"
  [ -z "$BEFORE" ] || start_aimx before "$(realpath "$BEFORE")" "$W/before" "$P_BEFORE" "${BEFORE_WORKERS:-}"
  versions
}

versions() {  # what the aimx servers run, in $R/version.txt
  (cd "$REPO" && echo "aimx $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- aimx || echo +dirty)"
   [ -z "$BEFORE" ] || (cd "$BEFORE" && echo "before $(git rev-parse --short HEAD)")) | tee "$R/version.txt"
}

targets() {
  echo --target postfix-milters=127.0.0.1:$P_PFM,dir=$W/pfm/maildir/box/new \
       --target postfix=127.0.0.1:$P_PF,dir=$W/pf/maildir/box/new \
       --target twisted=127.0.0.1:$P_TW,dir=$W/drop/tw,pid=$(pid_of twisted) \
       --target twisted-fsync=127.0.0.1:$P_TWF,dir=$W/drop/twf,pid=$(pid_of twisted-fsync) \
       --target aimx=127.0.0.1:$P_AIMX,dir=$W/aimx-data/inbox/box,pid=$(pids_of aimx)
  [ -z "$BEFORE" ] || echo --target before=127.0.0.1:$P_BEFORE,dir=$W/before-data/inbox/box,pid=$(pids_of before)
}

phase_throughput() {
  local name file m
  for spec in "4k dkim-plain-4k $M4K" "60k dkim-newsletter-60k $M60K"; do
    set -- $spec; name=$1 file=$2 m=$3
    log "throughput -F $file.eml, $ROUNDS rounds x $m"
    rm -f "$R/throughput-$name.csv"
    # shellcheck disable=SC2046
    "$PY" "$KIT/compare.py" --rounds "$ROUNDS" -s 8 -m "$m" -F "$W/corpus/$file.eml" --clean \
      --baseline postfix-milters --csv "$R/throughput-$name.csv" $(targets) \
      | tee "$R/throughput-$name.txt"
    "$PY" "$HERE/ratios.py" "$R/throughput-$name.csv" | tee "$R/ratios-$name.txt"
  done
}

phase_latency() {
  log "latency, final \".\" -> file, $LAT_ROUNDS rounds of $LAT_COUNT"
  local out=$R/latency.txt line
  : >"$out"
  for round in $(seq 1 "$LAT_ROUNDS"); do
    for t in "postfix-milters $P_PFM $W/pfm/maildir/box/new" "twisted-fsync $P_TWF $W/drop/twf" \
             "aimx $P_AIMX $W/aimx-data/inbox/box" \
             ${BEFORE:+"before $P_BEFORE $W/before-data/inbox/box"}; do
      set -- $t
      line=$("$PY" "$KIT/latency.py" --port "$2" --watch "$3" --count "$LAT_COUNT" --gap 0.02 \
             --message "$W/corpus/dkim-plain-4k.eml" | grep RESULT)
      printf 'round=%s server=%s %s\n' "$round" "$1" "${line#RESULT }" | tee -a "$out"
      find "$3" -mindepth 1 -maxdepth 1 ! -name '.*' -exec rm -rf {} +
    done
  done
  "$PY" "$HERE/ratios.py" --latency "$out" | tee "$R/latency-summary.txt"
}

phase_big() {
  local msg=$W/corpus-big/dkim-big-24.6m.eml base=$W/big out=$R/big.txt
  [ -f "$msg" ] || "$PY" "$KIT/make_corpus.py" "$W/corpus-big" --big-mib 24.6 \
    --dkim-key "$W/corpus/dkim-private.pem"
  log "big: 8 sessions of 60 KiB mail and one $(du -h "$msg" | cut -f1) message"
  aimx_conf "$base"
  start_aimx big "$(realpath "${BIG_TREE:-$REPO}")" "$base" "$P_BIG" "" "$base-run/probe.json"
  "$KIT/smtp_load.sh" -p "$P_BIG" -s 8 -m "$M60K" -F "$W/corpus/dkim-newsletter-60k.eml" \
    -w "$base-data/inbox/box" >"$R/big-load.txt" 2>&1 &
  local load=$!
  sleep 1
  "$PY" "$HERE/stall_probe.py" --port "$P_BIG" --pid "$(pid_of big)" --watch "$base-data/inbox/box" \
    --message "$msg" --probe-file "$base-run/probe.json" --timeout 300 | tee "$out"
  wait "$load" || true
  tail -1 "$R/big-load.txt" | tee -a "$out"
  stop_one big
  rm -rf "$base-data"
}

phase_profile() {
  local spy=${PYSPY:-$(command -v py-spy || true)} pid worker name file n
  [ -n "$spy" ] || { echo "no py-spy (pip install py-spy; PYSPY=path): no profile"; return 0; }
  pid=$(pid_of aimx) worker=$(pgrep -P "$pid" | head -1)
  for spec in "4k dkim-plain-4k 4000" "60k dkim-newsletter-60k 2000"; do
    set -- $spec; name=$1 file=$2 n=$3
    log "profile: $file.eml, daemon $pid and worker $worker"
    "$KIT/smtp_load.sh" -p "$P_AIMX" -m "$n" -F "$W/corpus/$file.eml" -w "$W/aimx-data/inbox/box" \
      -P "$(pids_of aimx | tr + ,)" >"$R/profile-$name-load.txt" 2>&1 &
    local load=$!
    sleep 2
    "$spy" record -p "$pid" -r 200 -d 8 --gil --function --nonblocking -f raw \
      -o "$R/profile-$name-daemon.raw" >/dev/null 2>&1 &
    "$spy" record -p "$worker" -r 200 -d 8 --gil --function --nonblocking -f raw \
      -o "$R/profile-$name-worker.raw" >/dev/null 2>&1
    wait "$load" || true
    tail -1 "$R/profile-$name-load.txt"
    for proc in daemon worker; do
      "$PY" "$HERE/profile_top.py" "$R/profile-$name-$proc.raw" --top 25 >"$R/profile-$name-$proc.txt" || true
      sed -n '1,14p' "$R/profile-$name-$proc.txt"
    done
    find "$W/aimx-data/inbox/box" -mindepth 1 -maxdepth 1 ! -name '.*' -exec rm -rf {} +
  done
}

phase_restart() {
  stop_one aimx
  start_aimx aimx "$REPO" "$W/aimx" "$P_AIMX"
  if [ -n "$BEFORE" ]; then
    stop_one before
    start_aimx before "$(realpath "$BEFORE")" "$W/before" "$P_BEFORE" "${BEFORE_WORKERS:-}"
  fi
  versions
}

phase_stop() {
  log "stop"
  for n in big before aimx twisted twisted-fsync dns; do stop_one "$n"; done
  "$KIT/postfix_milter_anchor.sh" stop "$W/pfm" || true
  "$KIT/postfix_anchor.sh" stop || true
}

[ $# -gt 0 ] || set -- setup start throughput latency stop
for phase in "$@"; do "phase_$phase"; done
