#!/usr/bin/env bash
# bench/run.sh - the aimx inbound benchmark, side by side with the kit's anchors.
#
#   bench/run.sh [PHASE ...]          default: all phases below, in this order
#
#   setup       bench venv (layered on $BASE_VENV, aimx installed from this checkout),
#               corpus (+ a big message that fits aimx's 25 MiB limit), aimx config
#               and DKIM key, Postfix configured on loopback (postfix_anchor.sh)
#   start       DNS stub, smtp-sink, Twisted floor, aiosmtpd, naive pipeline, Postfix, aimx
#   throughput  compare.py: -F dkim-plain-4k.eml and -F dkim-newsletter-60k.eml
#               (and -l 4096, 3 rounds, unless L4096=0)
#   latency     latency.py, $LAT_ROUNDS rounds: generated 4 KiB message and dkim-plain-4k.eml
#   profile     py-spy (GIL-holder samples) of aimx under a dkim-plain-4k load
#   big         a ~25 MiB message into a freshly started aimx (and floor): VmHWM growth,
#               reactor stalls (stall_probe.py); per-stage memory (pipeline_cost --mem)
#   stages      pipeline_cost.py (the kit's reference steps) and aimx_stages.py (aimx's own)
#   stop        stop everything started here (by PID) and Postfix
#   ab          (not in the default run; after start) A/B, -F dkim-plain-4k: aimx as is, aimx
#               whose log observer drops every event (AIMX_BENCH_LOG=off), aimx with a
#               2-thread pool (AIMX_BENCH_THREADS=2)
#   abhead      (not in the default run; after start) A/B, -F dkim-plain-4k: aimx (this checkout
#               as installed by setup), the same with a 2-thread pool, and aimx-head (git HEAD,
#               installed in $W/venv-head): prices the uncommitted work side by side
#
# Environment (defaults): W=/tmp/aimx-bench (scratch), KIT=<repo>/../shared/bench,
# BASE_VENV=/work/venv (must have twisted aiosmtpd dkimpy dnspython tomli-w html2text and
# aimx's dependencies), ROUNDS=5, M4K=2000, M60K=1000, LAT_ROUNDS=3, LAT_COUNT=200,
# BIG_ROUNDS=2, L4096=1, STAGE_RUNS=1, PROFILE_SECS=20; ports P_PF=2525 P_SINK=2526
# P_TW=2527 P_AIO=2528 P_TWP=2533 P_DNS=5353 P_AIMX=2540 P_AIMX_BIG=2541 P_TW_BIG=2542.
# Results: $W/results/*.txt (+ .csv).  Only 127.0.0.1 is ever used.  Root is needed for
# Postfix (apt-get install postfix swaks; postfix_anchor.sh edits the system main.cf).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
KIT=$(realpath "${KIT:-$REPO/../shared/bench}")
W=${W:-/tmp/aimx-bench}
BASE_VENV=${BASE_VENV:-/work/venv}
VENV=$W/venv
PY=$VENV/bin/python
R=$W/results
PIDS=$W/pids
ROUNDS=${ROUNDS:-5} M4K=${M4K:-2000} M60K=${M60K:-1000}
LAT_ROUNDS=${LAT_ROUNDS:-3} LAT_COUNT=${LAT_COUNT:-200} BIG_ROUNDS=${BIG_ROUNDS:-2}
L4096=${L4096:-1} STAGE_RUNS=${STAGE_RUNS:-1} PROFILE_SECS=${PROFILE_SECS:-20}
BIG_MIB=${BIG_MIB:-24.6}      # 24.6 MiB with LF is 24.9 MiB on the wire (CRLF): under 25 MiB

# ports (the kit's, plus aimx); each can be overridden from the environment
P_PF=${P_PF:-2525} P_SINK=${P_SINK:-2526} P_TW=${P_TW:-2527} P_AIO=${P_AIO:-2528}
P_TWP=${P_TWP:-2533} P_DNS=${P_DNS:-5353} P_AIMX=${P_AIMX:-2540} P_AIMX_BIG=${P_AIMX_BIG:-2541}
P_TW_BIG=${P_TW_BIG:-2542} P_AIMX_NOLOG=${P_AIMX_NOLOG:-2543} P_AIMX_POOL2=${P_AIMX_POOL2:-2544}
P_AIMX_HEAD=${P_AIMX_HEAD:-2545}
NS=127.0.0.1:$P_DNS
INBOX=$W/aimx-data/inbox/box


port_free() {
  ! "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$1" 2>/dev/null \
    || { echo "127.0.0.1:$1 is already in use; stop it first (bench/run.sh stop)" >&2; exit 1; }
}

aimx_conf() {  # aimx_conf DIR: config + DKIM key + empty data dirs under DIR-{etc,data,run}
  local base=$1
  rm -rf "$base-etc" "$base-data" "$base-run"
  mkdir -p "$base-etc" "$base-data/inbox" "$base-run"
  cat >"$base-etc/config.toml" <<'EOF'
domain = "bench.test"
[mailboxes.box]
address = "box@bench.test"
owner = "root"
EOF
  "$PY" -c 'import sys; from aimx.store import keys; keys.generate_dkim_key(sys.argv[1])' "$base-etc"
  # the mailbox directory must exist before latency.py starts watching it
  install -d -m 700 "$base-data/inbox/box"
}

start_aimx() {  # start_aimx NAME BASE PORT [PROBE_FILE]
  local name=$1 base=$2 port=$3 probe=${4:-}
  port_free "$port"
  ( cd "$base-run" && AIMX_BENCH_NODEDUP=1 AIMX_BENCH_PROBE="$probe" AIMX_NAMESERVERS=$NS \
      AIMX_BENCH_LOG=${AIMX_BENCH_LOG:-on} AIMX_BENCH_THREADS=${AIMX_BENCH_THREADS:-} \
      AIMX_ARGS="--bind 127.0.0.1:$port --config-dir $base-etc --data-dir $base-data --runtime-dir $base-run" \
      exec "$PY" -c 'import sys; from twisted.scripts.twistd import run; sys.argv[0] = "twistd"; sys.exit(run())' \
        -n --pidfile= -y "$HERE/aimx_bench.tac" >"$W/logs/$name.log" 2>&1 ) &
  echo $! >"$PIDS/$name.pid"
  wait_port "$port"
}

# ------------------------------------------------------------------ phases
phase_setup() {
  log "setup in $W (kit: $KIT)"
  command -v smtp-source >/dev/null || [ -x /usr/sbin/smtp-source ] || {
    echo "smtp-source missing: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix swaks" >&2; exit 1; }
  mkdir -p "$W" "$R" "$PIDS" "$W/logs"
  if [ ! -x "$PY" ]; then
    "$BASE_VENV/bin/python" -m venv "$VENV"
    # the base venv's packages (Twisted, dkimpy, ... and aimx's dependencies) underneath
    "$BASE_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])' \
      >"$("$PY" -c 'import site; print(site.getsitepackages()[0])')/_bench_base.pth"
  fi
  # a snapshot of this checkout (re-run setup after the code changes)
  "$PY" -m pip install -q --no-deps --force-reinstall "$REPO"
  "$PY" -c 'import aimx, twisted, dkim, dns, aiosmtpd, tomli_w' \
    || { echo "the base venv lacks packages; see bench/README.md" >&2; exit 1; }
  [ -x "$VENV/bin/py-spy" ] || "$PY" -m pip install -q py-spy || echo "py-spy not installed: no profile phase"
  (cd "$REPO" && echo "aimx $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- aimx || echo +dirty)") >"$R/version.txt"
  [ -f "$W/corpus/dkim-txt.txt" ] || "$PY" "$KIT/make_corpus.py" "$W/corpus"
  [ -f "$W/corpus-big/dkim-big-${BIG_MIB}m.eml" ] \
    || "$PY" "$KIT/make_corpus.py" "$W/corpus-big" --big-mib "$BIG_MIB" --dkim-key "$W/corpus/dkim-private.pem"
  aimx_conf "$W/aimx"
  if postfix status >/dev/null 2>&1; then postfix stop; fi
  rm -rf "$W/pf"
  "$KIT/postfix_anchor.sh" setup "$W/pf" "$P_PF"
}

phase_start() {
  log "start"
  mkdir -p "$PIDS" "$W/logs" "$W/drop"
  for p in $P_DNS $P_SINK $P_TW $P_AIO $P_TWP $P_PF $P_AIMX; do port_free "$p"; done
  spawn dns "$PY" "$KIT/dns_stub.py" --port "$P_DNS" --dkim-txt "$W/corpus/dkim-txt.txt"
  spawn sink smtp-sink -u nobody "127.0.0.1:$P_SINK" 1024
  rm -rf "$W/drop"; mkdir -p "$W/drop"
  spawn twisted "$PY" "$KIT/anchor_twisted.py" --port "$P_TW" --dir "$W/drop/tw"
  spawn aiosmtpd "$PY" "$KIT/anchor_aiosmtpd.py" --port "$P_AIO" --dir "$W/drop/aio"
  spawn twp "$PY" "$KIT/anchor_twisted.py" --port "$P_TWP" --dir "$W/drop/twp" --pipeline "$W/corpus"
  # virtual(8) makes the Maildir on first delivery; the watchers need it before
  for d in new cur tmp; do install -d -o nobody -g nogroup "$W/pf/maildir/box/$d"; done
  "$KIT/postfix_anchor.sh" start
  for p in $P_DNS $P_SINK $P_TW $P_AIO $P_TWP $P_PF; do wait_port "$p"; done
  rm -rf "$INBOX"; install -d -m 700 "$INBOX"
  start_aimx aimx "$W/aimx" "$P_AIMX"
  "$PY" "$KIT/dns_stub.py" --selftest 500 --port "$P_DNS" | tee "$R/dns-selftest.txt"
  # one message each so that first-use costs (imports, thread pool, dedup scan) are paid
  "$PY" "$KIT/latency.py" --port "$P_AIMX" --watch "$INBOX" --count 3 --warmup 2 \
    --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
}

targets() {  # the compare.py targets
  echo --target sink=127.0.0.1:$P_SINK \
       --target postfix=127.0.0.1:$P_PF,dir=$W/pf/maildir/box/new \
       --target twisted=127.0.0.1:$P_TW,dir=$W/drop/tw,pid=$(pid_of twisted) \
       --target aiosmtpd=127.0.0.1:$P_AIO,dir=$W/drop/aio,pid=$(pid_of aiosmtpd) \
       --target tw-pipeline=127.0.0.1:$P_TWP,dir=$W/drop/twp,pid=$(pid_of twp) \
       --target aimx=127.0.0.1:$P_AIMX,dir=$INBOX,pid=$(pid_of aimx)
}

phase_throughput() {
  log "throughput -F dkim-plain-4k.eml, $ROUNDS rounds x $M4K"
  # shellcheck disable=SC2046
  "$PY" "$KIT/compare.py" --rounds "$ROUNDS" -s 8 -m "$M4K" -F "$W/corpus/dkim-plain-4k.eml" \
    --clean --baseline twisted --csv "$R/throughput-dkim-plain-4k.csv" $(targets) \
    | tee "$R/throughput-dkim-plain-4k.txt"
  log "throughput -F dkim-newsletter-60k.eml, $ROUNDS rounds x $M60K"
  # shellcheck disable=SC2046
  "$PY" "$KIT/compare.py" --rounds "$ROUNDS" -s 8 -m "$M60K" -F "$W/corpus/dkim-newsletter-60k.eml" \
    --clean --baseline twisted --csv "$R/throughput-dkim-newsletter-60k.csv" $(targets) \
    | tee "$R/throughput-dkim-newsletter-60k.txt"
  if [ "$L4096" = 1 ]; then
    log "throughput -l 4096, 3 rounds x $M4K"
    # shellcheck disable=SC2046
    "$PY" "$KIT/compare.py" --rounds 3 -s 8 -m "$M4K" -l 4096 --clean --baseline twisted \
      --csv "$R/throughput-l4096.csv" $(targets) | tee "$R/throughput-l4096.txt"
  fi
}

phase_latency() {
  log "latency, $LAT_ROUNDS rounds of $LAT_COUNT messages per server"
  local out=$R/latency.txt
  : >"$out"
  for round in $(seq 1 "$LAT_ROUNDS"); do
    for t in "twisted $P_TW $W/drop/tw" "aiosmtpd $P_AIO $W/drop/aio" \
             "postfix $P_PF $W/pf/maildir/box/new" "tw-pipeline $P_TWP $W/drop/twp" \
             "aimx $P_AIMX $INBOX"; do
      set -- $t
      for msg in generated dkim-plain-4k; do
        [ "$msg" = dkim-plain-4k ] && [ "$1" = aiosmtpd ] && continue
        local extra=()
        [ "$msg" = generated ] || extra=(--message "$W/corpus/$msg.eml")
        line=$("$PY" "$KIT/latency.py" --port "$2" --watch "$3" --count "$LAT_COUNT" --gap 0.02 \
               "${extra[@]}" | grep RESULT)
        printf 'round=%s server=%s message=%s %s\n' "$round" "$1" "$msg" "${line#RESULT }" | tee -a "$out"
      done
      # keep the directories small (latency.py watches, it does not count)
      find "$3" -maxdepth 1 -type f ! -name '.*' -delete
    done
  done
  "$PY" - "$out" <<'PYEOF' | tee "$R/latency-summary.txt"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(x.split("=", 1) for x in line.split())
    rows[(kv["server"], kv["message"])].append(kv)
print("%-12s %-14s %-22s %-22s %-22s" % ("server", "message", "file p50 ms (rounds)", "file p99 ms (rounds)", "ack p50 / p99 ms (med)"))
for (srv, msg), rs in rows.items():
    f50 = [float(r["file_p50"]) for r in rs]; f99 = [float(r["file_p99"]) for r in rs]
    a50 = [float(r["ack_p50"]) for r in rs]; a99 = [float(r["ack_p99"]) for r in rs]
    print("%-12s %-14s %-22s %-22s %.2f / %.2f" % (srv, msg, "%.2f [%s]" % (statistics.median(f50), " ".join("%.2f" % x for x in f50)),
          "%.2f [%s]" % (statistics.median(f99), " ".join("%.2f" % x for x in f99)), statistics.median(a50), statistics.median(a99)))
PYEOF
}

phase_profile() {
  [ -x "$VENV/bin/py-spy" ] || { echo "no py-spy: skipping the profile"; return 0; }
  log "profile: py-spy --gil while aimx takes a dkim-plain-4k load"
  local pid; pid=$(pid_of aimx)
  # first the load alone (figures without the sampler), then the same load sampled
  local t0; t0=$(awk '{print $14, $15}' "/proc/$pid/stat")
  "$KIT/smtp_load.sh" -p "$P_AIMX" -m "$M4K" -F "$W/corpus/dkim-plain-4k.eml" -w "$INBOX" -P "$pid" \
    | tee "$R/profile-load-unsampled.txt"
  local us user_us
  us=$(awk -v t0="$t0" -v n="$M4K" -v tck="$(getconf CLK_TCK)" '{split(t0, a, " ");
       printf "%.0f %.0f", ($14 - a[1]) / tck / n * 1e6, ($15 - a[2]) / tck / n * 1e6}' "/proc/$pid/stat")
  user_us=${us% *}
  echo "server CPU split: user ${user_us} us/msg, sys ${us#* } us/msg" | tee -a "$R/profile-load-unsampled.txt"
  find "$INBOX" -maxdepth 1 -type f ! -name '.*' -delete
  # about PROFILE_SECS + 5 s of load at the unsampled rate; the sampler runs inside it
  local rate n; rate=$(sed -n 's/.*deliver_mps=\([0-9.]*\).*/\1/p' "$R/profile-load-unsampled.txt")
  n=$("$PY" -c 'import sys; print(int(float(sys.argv[1] or 100) * (int(sys.argv[2]) + 5)))' "${rate:-100}" "$PROFILE_SECS")
  "$KIT/smtp_load.sh" -p "$P_AIMX" -m "$n" -F "$W/corpus/dkim-plain-4k.eml" -w "$INBOX" -P "$pid" \
    >"$R/profile-load-sampled.txt" 2>&1 &
  local load=$!
  sleep 2
  "$VENV/bin/py-spy" record -p "$pid" -r 200 -d "$PROFILE_SECS" --gil --function --nonblocking \
    -f raw -o "$R/profile-gil.txt" >"$W/logs/py-spy.log" 2>&1 || cat "$W/logs/py-spy.log"
  wait "$load" || true
  find "$INBOX" -maxdepth 1 -type f ! -name '.*' -delete
  # GIL-holding samples are Python running: scale the shares by the user CPU per message
  "$PY" "$HERE/profile_top.py" "$R/profile-gil.txt" --top 25 ${user_us:+--cpu-us-per-msg "$user_us"} \
    | tee "$R/profile-summary.txt"
}

phase_big() {
  log "big message: $BIG_ROUNDS fresh aimx servers, then a fresh floor"
  local msg=$W/corpus-big/dkim-big-${BIG_MIB}m.eml out=$R/big.txt
  : >"$out"
  for round in $(seq 1 "$BIG_ROUNDS"); do
    aimx_conf "$W/aimx-big"
    start_aimx aimx-big "$W/aimx-big" "$P_AIMX_BIG" "$W/aimx-big-run/probe.json"
    # one small message first: lazy imports, the thread pool and the dedup scan
    "$PY" "$KIT/latency.py" --port "$P_AIMX_BIG" --watch "$W/aimx-big-data/inbox/box" --count 1 \
      --warmup 0 --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
    sleep 1
    { echo "--- aimx, round $round"; "$PY" "$HERE/stall_probe.py" --port "$P_AIMX_BIG" --pid "$(pid_of aimx-big)" \
        --watch "$W/aimx-big-data/inbox/box" --message "$msg" --probe-file "$W/aimx-big-run/probe.json"; } | tee -a "$out"
    stop_one aimx-big
  done
  if [ -x "$VENV/bin/py-spy" ]; then
    # where the reactor and the worker spend the big message (GIL holder, per thread, 1 kHz)
    aimx_conf "$W/aimx-big"
    start_aimx aimx-big "$W/aimx-big" "$P_AIMX_BIG"
    "$PY" "$KIT/latency.py" --port "$P_AIMX_BIG" --watch "$W/aimx-big-data/inbox/box" --count 1 \
      --warmup 0 --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
    "$VENV/bin/py-spy" record -p "$(pid_of aimx-big)" -r 1000 -d 6 --gil --threads --nonblocking \
      -f raw -o "$R/profile-big-gil.txt" >"$W/logs/py-spy-big.log" 2>&1 &
    local spy=$!
    sleep 1
    "$PY" "$KIT/latency.py" --port "$P_AIMX_BIG" --watch "$W/aimx-big-data/inbox/box" --count 1 \
      --warmup 0 --timeout 120 --message "$msg" >/dev/null
    wait "$spy" || cat "$W/logs/py-spy-big.log"
    stop_one aimx-big
    "$PY" "$HERE/profile_top.py" "$R/profile-big-gil.txt" --pairs --rate 1000 --top 15 \
      | tee "$R/profile-big-summary.txt"
  fi
  port_free "$P_TW_BIG"
  rm -rf "$W/drop/twbig"
  spawn twbig "$PY" "$KIT/anchor_twisted.py" --port "$P_TW_BIG" --dir "$W/drop/twbig"
  wait_port "$P_TW_BIG"
  "$PY" "$KIT/latency.py" --port "$P_TW_BIG" --watch "$W/drop/twbig" --count 1 --warmup 0 >/dev/null
  { echo "--- Twisted floor (anchor_twisted.py)"; "$PY" "$HERE/stall_probe.py" --port "$P_TW_BIG" \
      --pid "$(pid_of twbig)" --watch "$W/drop/twbig" --message "$msg"; } | tee -a "$out"
  stop_one twbig
  rm -rf "$W/drop/twbig" "$W/aimx-big-data"
  log "per-stage peak memory: kit reference steps, then aimx's"
  "$PY" "$KIT/pipeline_cost.py" "$W/corpus" --mem "$msg" | tee "$R/mem-kit.txt"
  "$PY" "$HERE/aimx_stages.py" "$W/corpus" --nameserver "$NS" --mem "$msg" | tee "$R/mem-aimx.txt"
}

phase_stages() {
  log "in-process stage costs"
  for i in $(seq 1 "$STAGE_RUNS"); do
    "$PY" "$KIT/pipeline_cost.py" "$W/corpus" | tee "$R/pipeline-cost-$i.txt"
  done
  "$PY" "$HERE/aimx_stages.py" "$W/corpus" --nameserver "$NS" | tee "$R/aimx-stages.txt"
}

phase_ab() {
  log "A/B: aimx vs aimx with AIMX_BENCH_LOG=off vs aimx with a 2-thread pool, $ROUNDS rounds x $M4K"
  aimx_conf "$W/aimx-nolog"
  AIMX_BENCH_LOG=off start_aimx aimx-nolog "$W/aimx-nolog" "$P_AIMX_NOLOG"
  aimx_conf "$W/aimx-pool2"
  AIMX_BENCH_THREADS=2 start_aimx aimx-pool2 "$W/aimx-pool2" "$P_AIMX_POOL2"
  for v in nolog:$P_AIMX_NOLOG pool2:$P_AIMX_POOL2; do
    "$PY" "$KIT/latency.py" --port "${v#*:}" --watch "$W/aimx-${v%%:*}-data/inbox/box" --count 3 \
      --warmup 2 --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
  done
  "$PY" "$KIT/compare.py" --rounds "$ROUNDS" -s 8 -m "$M4K" -F "$W/corpus/dkim-plain-4k.eml" \
    --clean --baseline twisted --csv "$R/ab.csv" \
    --target twisted=127.0.0.1:$P_TW,dir=$W/drop/tw,pid=$(pid_of twisted) \
    --target aimx=127.0.0.1:$P_AIMX,dir=$INBOX,pid=$(pid_of aimx) \
    --target aimx-nolog=127.0.0.1:$P_AIMX_NOLOG,dir=$W/aimx-nolog-data/inbox/box,pid=$(pid_of aimx-nolog) \
    --target aimx-pool2=127.0.0.1:$P_AIMX_POOL2,dir=$W/aimx-pool2-data/inbox/box,pid=$(pid_of aimx-pool2) \
    | tee "$R/ab.txt"
  stop_one aimx-nolog
  stop_one aimx-pool2
}

phase_abhead() {
  log "A/B: aimx vs aimx with a 2-thread pool vs git HEAD, $ROUNDS rounds x $M4K"
  # aimx-head: the committed code (git archive HEAD) in its own venv over the same base
  local hv=$W/venv-head src=$W/head-src
  if [ ! -x "$hv/bin/python" ]; then
    "$BASE_VENV/bin/python" -m venv "$hv"
    "$BASE_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])' \
      >"$("$hv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/_bench_base.pth"
  fi
  rm -rf "$src"; mkdir -p "$src"; (cd "$REPO" && git archive HEAD) | tar -x -C "$src"
  "$hv/bin/python" -m pip install -q --no-deps --force-reinstall "$src"
  aimx_conf "$W/aimx-pool2"
  AIMX_BENCH_THREADS=2 start_aimx aimx-pool2 "$W/aimx-pool2" "$P_AIMX_POOL2"
  aimx_conf "$W/aimx-head"
  PY=$hv/bin/python start_aimx aimx-head "$W/aimx-head" "$P_AIMX_HEAD"
  for v in pool2:$P_AIMX_POOL2 head:$P_AIMX_HEAD; do
    "$PY" "$KIT/latency.py" --port "${v#*:}" --watch "$W/aimx-${v%%:*}-data/inbox/box" --count 3 \
      --warmup 2 --message "$W/corpus/dkim-plain-4k.eml" >/dev/null
  done
  "$PY" "$KIT/compare.py" --rounds "$ROUNDS" -s 8 -m "$M4K" -F "$W/corpus/dkim-plain-4k.eml" \
    --clean --baseline twisted --csv "$R/abhead.csv" \
    --target twisted=127.0.0.1:$P_TW,dir=$W/drop/tw,pid=$(pid_of twisted) \
    --target aimx=127.0.0.1:$P_AIMX,dir=$INBOX,pid=$(pid_of aimx) \
    --target aimx-pool2=127.0.0.1:$P_AIMX_POOL2,dir=$W/aimx-pool2-data/inbox/box,pid=$(pid_of aimx-pool2) \
    --target aimx-head=127.0.0.1:$P_AIMX_HEAD,dir=$W/aimx-head-data/inbox/box,pid=$(pid_of aimx-head) \
    | tee "$R/abhead.txt"
  stop_one aimx-pool2
  stop_one aimx-head
}

phase_stop() {
  log "stop"
  for n in aimx aimx-big aimx-nolog aimx-pool2 aimx-head twbig twp aiosmtpd twisted sink dns; do stop_one "$n"; done
  if postfix status >/dev/null 2>&1; then "$KIT/postfix_anchor.sh" stop || true; fi
  rm -f "$W/pf/postfix.log"
}

phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(setup start throughput latency profile big stages stop)
# a full run cleans up after itself, also on failure; single phases leave things running
[ $# -gt 0 ] || trap 'phase_stop' EXIT
mkdir -p "$W" "$R" "$PIDS" "$W/logs"
for ph in "${phases[@]}"; do
  case "$ph" in
    setup|start|throughput|latency|profile|big|stages|stop|ab|abhead) "phase_$ph" ;;
    *) sed -n '2,29p' "$0"; exit 2 ;;
  esac
done
trap - EXIT
