#!/usr/bin/env bash
# Runs pushlab's whole benchmark matrix and writes docs/benchmarks.md, plus
# the measured tables in docs/transports.md.
#
#   crates/pushlab-bench/run.sh           the full matrix (about 35 minutes, capped at 45)
#   QUICK=1 crates/pushlab-bench/run.sh   a smoke run: small counts, short steps
#   ONLY=latency,profile crates/pushlab-bench/run.sh   some sections only
#                               (latency, wire, fanout, idle, cost, redis, profile, criterion;
#                               and tls, webtransport, which are not in the default run)
#
# `ONLY=redis` rewrites only the Redis section of docs/benchmarks.md and
# leaves the rest of the page, which comes from another run, as it is;
# `ONLY=cost` (cost.sh's rounds: CPU per delivery and idle memory) likewise,
# and the two together too. The sections written by hand are files in
# docs/benchmarks/, which every whole page includes.
#
# `ONLY=tls,webtransport` (either or both) rewrites only the section "HTTPS,
# HTTP/2 and WebTransport" of docs/benchmarks.md, with report-secure.py.
#
# It runs from the workspace root, whose target/ holds every crate's binaries.
#
# Method: every server (pushlab --workers 1, pushlab-floor, the socket.io
# peer on Node) runs pinned to core 1 with `taskset -c 1`; the load generator
# runs pinned to core 0. Each measurement gets a fresh server (and a fresh
# redis-server, pinned with it, where it uses one). Every server this script
# starts is stopped on exit, whatever happens. Raw JSON results go
# to target/bench-results/<time>/, and docs/ is written from them alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=crates/pushlab-bench

# The pushlab binary under test; another build (an older commit's, say) can
# be measured with the same matrix by naming it here.
PUSHLAB_BIN=${PUSHLAB_BIN:-target/release/pushlab}
# Every load client comes from 127.0.0.1, so pushlab's per-address limits are
# off. Set through the environment, which a build without those flags
# ignores.
export PUSHLAB_IP_CONNECTIONS=0 PUSHLAB_IP_SESSIONS=0 PUSHLAB_IP_REGISTRATIONS=0 \
  PUSHLAB_IP_RATE_LIMIT=0 PUSHLAB_IP_ROOMS=0
QUICK=${QUICK:-0}
# The whole run, builds excluded, stops starting new measurements after this.
BUDGET_SECS=${BUDGET_SECS:-2700}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
# Servers and the load generator run as ordinary processes (SCHED_OTHER),
# each alone on its core. Not under real-time scheduling: the kernel's RT
# throttling (sched_rt_runtime_us, 950 ms of every second) freezes a
# real-time process that nears 95% of its core for up to 50 ms, and a
# saturated fan-out run does near 95%; those freezes landed right on the
# p99 <= 50 ms criterion and decided the searches. SCHED_RT=1 runs them under
# `chrt -r 10` anyway, for a machine where other work would compete.
if [ "${SCHED_RT:-0}" = 1 ]; then RT=(chrt -r 10); else RT=(); fi
export RUST_BACKTRACE=0

if [ "$QUICK" = 1 ]; then
  FANOUT=${FANOUT:-100}; IDLE=${IDLE:-1000}; STEP_SECS=2; LAT_SECS=3; BISECT=1; CROSS=${CROSS:-10}
else
  FANOUT=${FANOUT:-1000}; IDLE=${IDLE:-10000}; STEP_SECS=5; LAT_SECS=10; BISECT=3; CROSS=${CROSS:-100}
fi

ONLY=${ONLY:-latency,wire,fanout,idle,cost,redis,profile,criterion}
want() { [[ ",$ONLY," == *",$1,"* ]]; }

step() { printf '\n==> %s\n' "$*" >&2; }

step "building (release) and installing the socket.io peer from its lockfile"
cargo build --release --locked --workspace --bins
if want criterion && [ "$QUICK" != 1 ]; then cargo bench --locked --no-run >/dev/null 2>&1; fi
(cd "$BENCH/socketio" && npm ci --no-audit --no-fund --silent)

OUT="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
START=$(date +%s)
LOAD=target/release/pushlab-load
source "$BENCH/servers.sh"

PUSHLAB=("$PUSHLAB_BIN" --addr 127.0.0.1:0 --rate-limit 0 --workers 1)
ON_SERVER_CORE=("${RT[@]}" taskset -c "$SERVER_CORE")

# start_server KIND NAME: a fresh server on a free port, pinned to the
# server core, and everything it needs. KIND is pushlab, floor, socketio;
# pushlab-redis (a redis-server and one node on it); or pushlab-redis-same
# and pushlab-redis-cross (a redis-server and two nodes on it, A and B, the
# subscribers on B and the publishers on B or on A). Sets SERVER_PID and
# SERVER_URL (the subscribers' server); SIDE_PIDS, every pid of the server
# side, comma separated; SERVER_ARGS, what pushlab-load needs besides; and
# SHOWN, the name each URL and pid goes by in the commands shown in docs/.
declare -A SHOWN
start_server() {
  SERVER_ARGS=()
  SHOWN=()
  case "$1" in
    pushlab) launch "$2" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" ;;
    pushlab-wt) launch "$2" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" --webtransport ;;
    pushlab-tls) launch "$2" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" --tls; SERVER_URL=https://${SERVER_URL#http://} ;;
    floor) launch "$2" "${ON_SERVER_CORE[@]}" target/release/pushlab-floor --addr 127.0.0.1:0 ;;
    socketio) launch "$2" "${ON_SERVER_CORE[@]}" node "$BENCH/socketio/server.js" --addr 127.0.0.1:0 ;;
    pushlab-redis)
      stop_server
      launch_redis "$2" "${ON_SERVER_CORE[@]}"
      launch_beside "$2" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" --redis "$REDIS_URL"
      SIDE_PIDS="$SERVER_PID,$REDIS_PID"
      SHOWN=([$SERVER_URL]='$URL' [$SIDE_PIDS]='$PID,$REDIS_PID')
      return ;;
    pushlab-redis-same|pushlab-redis-cross)
      stop_server
      launch_redis "$2" "${ON_SERVER_CORE[@]}"
      launch_beside "$2-a" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" --redis "$REDIS_URL"
      local a_url=$SERVER_URL a_pid=$SERVER_PID
      launch_beside "$2" "${ON_SERVER_CORE[@]}" "${PUSHLAB[@]}" --redis "$REDIS_URL"
      [ "$1" = pushlab-redis-same ] || SERVER_ARGS=(--publish-url "$a_url")
      SIDE_PIDS="$a_pid,$SERVER_PID,$REDIS_PID"
      SHOWN=([$SERVER_URL]='$URL_B' [$a_url]='$URL_A' [$SIDE_PIDS]='$PID_A,$PID_B,$REDIS_PID')
      return ;;
  esac
  SIDE_PIDS=$SERVER_PID
  SHOWN=([$SERVER_URL]='$URL' [$SIDE_PIDS]='$PID')
}

# shown WORDS...: the words, with the server's URLs and pids as SHOWN names them.
shown() {
  local out=() word
  for word in "$@"; do out+=("${SHOWN[$word]:-$word}"); done
  echo "${out[*]}"
}

# measure NAME CAP_SECS SERVER pushlab-load ARGS...: one measurement on a
# fresh server, its JSON saved as NAME.json; skipped once the budget is spent.
measure() {
  local name=$1 cap=$2 server=$3; shift 3
  local left=$(( BUDGET_SECS - ($(date +%s) - START) ))
  if [ "$left" -le 10 ]; then
    echo "skipped: the time budget is spent" >"$OUT/$name.skipped"
    step "$name: skipped (time budget)"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  start_server "$server" "$name"
  local args=("$@" --url "$SERVER_URL" "${SERVER_ARGS[@]}" --server-pid "$SIDE_PIDS" --json)
  echo "${RT[*]} taskset -c $LOAD_CORE $LOAD $(shown "${args[@]}")" >"$OUT/$name.cmd"
  step "$name: $(cat "$OUT/$name.cmd")"
  if ! timeout --kill-after=5 "$cap" "${RT[@]}" taskset -c "$LOAD_CORE" "$LOAD" "${args[@]}" \
      >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    echo "failed or timed out after ${cap}s; see $name.err" >"$OUT/$name.skipped"
    tail -3 "$OUT/$name.err" >&2 || true
  fi
  stop_server
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -srm)"
  echo "nproc: $(nproc)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version)"
  echo "socket.io: $(node -p "require('./$BENCH/socketio/node_modules/socket.io/package.json').version")"
  echo "pushlab commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches crates Cargo.toml || echo ' (with uncommitted changes)')"
  echo "quick: $QUICK"
  echo "sections: $ONLY"
  if want redis; then echo "redis-server: $(redis-server --version)"; fi
  echo "scheduling: ${RT[*]:-ordinary (SCHED_OTHER)}; server on core $SERVER_CORE, load generator on core $LOAD_CORE"
  echo "lscpu:"
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|MHz|L2|L3|Hypervisor' | sed 's/^/  /'
} >"$OUT/machine.txt"

# 1. Latency: one subscriber, 100 msg/s.
if want latency; then
for t in ws sse longpoll poll; do
  measure "latency-pushlab-$t" 60 pushlab rate --target pushlab --transport "$t" \
    --subscribers 1 --rate 100 --duration "$LAT_SECS" --poll-interval-ms 50
done
measure latency-floor-ws 60 floor rate --target floor --transport ws \
  --subscribers 1 --rate 100 --duration "$LAT_SECS"
for t in ws polling; do
  measure "latency-socketio-$t" 60 socketio rate --target socketio --transport "$t" \
    --subscribers 1 --rate 100 --duration "$LAT_SECS"
done
fi

# 2. Bytes and requests per event for one subscriber, at 1 and 30 events/s.
#    Short polling asks every 1000 ms here, the browser client's default.
if want wire; then
for rate in 1 30; do
  secs=$([ "$rate" = 1 ] && echo $(( LAT_SECS )) || echo $(( LAT_SECS / 2 )))
  for t in ws sse longpoll poll; do
    measure "wire-pushlab-$t-$rate" 60 pushlab rate --target pushlab --transport "$t" \
      --subscribers 1 --rate "$rate" --duration "$secs" --poll-interval-ms 1000
  done
  for t in ws polling; do
    measure "wire-socketio-$t-$rate" 60 socketio rate --target socketio --transport "$t" \
      --subscribers 1 --rate "$rate" --duration "$secs"
  done
done
fi

# 3. Fan-out: the highest sustained publish rate with p99 <= 50 ms and
#    nothing missing, by doubling then bisecting.
SEARCH=(--subscribers "$FANOUT" --duration "$STEP_SECS" --bisect "$BISECT" --p99-limit-ms 50)
if want fanout; then
measure fanout-pushlab-ws 360 pushlab search --target pushlab --transport ws --start 128 "${SEARCH[@]}"
measure fanout-floor-ws 360 floor search --target floor --transport ws --start 128 "${SEARCH[@]}"
measure fanout-pushlab-sse 360 pushlab search --target pushlab --transport sse --start 128 "${SEARCH[@]}"
measure fanout-pushlab-longpoll 360 pushlab search --target pushlab --transport longpoll --start 64 "${SEARCH[@]}"
measure fanout-socketio-ws 240 socketio search --target socketio --transport ws --start 16 "${SEARCH[@]}"
measure fanout-socketio-polling 240 socketio search --target socketio --transport polling --start 8 "${SEARCH[@]}"
measure fanout-pushlab-mix 60 pushlab rate --target pushlab --transport mix \
  --subscribers "$FANOUT" --rate 50 --duration "$STEP_SECS" --poll-interval-ms 1000
fi

# 4. Memory: idle connections held open, server RSS per connection.
if want idle; then
for t in ws sse longpoll; do
  measure "idle-pushlab-$t" 120 pushlab idle --target pushlab --transport "$t" --subscribers "$IDLE"
done
measure idle-floor-ws 120 floor idle --target floor --transport ws --subscribers "$IDLE"
for t in ws polling; do
  measure "idle-socketio-$t" 120 socketio idle --target socketio --transport "$t" --subscribers "$IDLE"
done
fi

# 4b. Cost: server CPU per delivery at fixed loads, as ratios (pushlab `ws`
#     against the floor, `sse` and `longpoll` against `ws`) over alternating
#     rounds, and memory per idle connection of each transport: cost.sh, with
#     its results in $OUT/cost.
if want cost; then
  if [ $(( BUDGET_SECS - ($(date +%s) - START) )) -gt 420 ]; then
    step "cost: crates/pushlab-bench/cost.sh"
    # A smoke run takes one short round, on the smoke run's counts.
    quick_cost=()
    [ "$QUICK" = 1 ] && quick_cost=(ROUNDS=1 SECS=2 HOLD=3 FANOUT="$FANOUT" IDLE="$IDLE")
    env "${quick_cost[@]}" ONLY=cpu,idle COST_OUT="$OUT/cost" NO_BUILD=1 PUSHLAB_BIN="$PUSHLAB_BIN" \
      FLOOR_BIN=target/release/pushlab-floor LOAD="$LOAD" SERVER_CORE="$SERVER_CORE" \
      LOAD_CORE="$LOAD_CORE" timeout --kill-after=5 900 "$BENCH/cost.sh" >"$OUT/cost.out" 2>&1 \
      || echo "cost.sh failed or timed out; see cost.out" >"$OUT/cost.skipped"
  else
    echo "skipped: the time budget is spent" >"$OUT/cost.skipped"
  fi
fi

# 5. Scale-out on Redis. The server side is a pushlab node and the
#    redis-server it uses, both pinned to the server core, so Redis's CPU
#    comes out of the same core as the in-memory log's; the load generator
#    keeps core 0, and the CPU figures are the node's and Redis's summed.
#    a. One node, in memory against `--redis`: the ws fan-out search to
#       $FANOUT (the fan-out section's criteria) with one publisher, as
#       there, and with $PUBLISHERS: a node on Redis answers one socket's
#       messages one after the other, each after its round trip to Redis,
#       so a lone publisher measures that socket rather than the fan-out.
#       Then fixed rates: 50 msg/s from one publisher, where neither setup
#       fills its core and CPU per delivery is a cost, and 200 msg/s from
#       $PUBLISHERS, nearer the core's limit, for latency.
#    b. Across nodes: two nodes on one Redis, A and B, and Redis, all three
#       on the server core. The publisher sends to A and the subscribers read
#       B, against the publisher on B too (A still running and mirroring
#       the room, so the same processes share the core), and against one
#       node in memory; 1 and $CROSS subscribers at 100 msg/s.
#    Each setup is NAME:KIND, its name in the results and start_server's kind.
PUBLISHERS=${PUBLISHERS:-8}
if want redis; then
for publishers in 1 "$PUBLISHERS"; do
  for setup in memory:pushlab redis:pushlab-redis; do
    measure "redis-${setup%%:*}-ws-search-p$publishers" 360 "${setup#*:}" search --target pushlab \
      --transport ws --start 128 --publishers "$publishers" "${SEARCH[@]}"
  done
done
for run in ws:50:1 ws:200:"$PUBLISHERS" sse:50:1; do
  IFS=: read -r transport rate publishers <<<"$run"
  for setup in memory:pushlab redis:pushlab-redis; do
    measure "redis-${setup%%:*}-$transport-$rate-p$publishers" 60 "${setup#*:}" rate --target pushlab \
      --transport "$transport" --subscribers "$FANOUT" --rate "$rate" --publishers "$publishers" \
      --duration "$LAT_SECS"
  done
done
for subscribers in 1 "$CROSS"; do
  for setup in memory:pushlab same:pushlab-redis-same cross:pushlab-redis-cross; do
    measure "redis-nodes-${setup%%:*}-$subscribers" 60 "${setup#*:}" rate --target pushlab \
      --transport ws --subscribers "$subscribers" --rate 100 --duration "$LAT_SECS"
  done
done
fi

# 6. Where the server's time goes: pushlab and the floor at the same rate,
#    low enough that both keep up, with a CPU profile (perf, cpu-clock: this
#    VM has no hardware counters) and a count of send and receive syscalls,
#    3 s in the middle of the publishing window. WebSocket fan-out (and
#    pushlab's SSE) at PROFILE_RATE, long-polls (pushlab's and the floor's)
#    at PROFILE_LP_RATE: how much of each delivery is the kernel's.
PROFILE_RATE=${PROFILE_RATE:-50}
PROFILE_LP_RATE=${PROFILE_LP_RATE:-20}
profile() {
  local name=$1 target=$2 transport=$3 rate=$4
  [ $(( BUDGET_SECS - ($(date +%s) - START) )) -gt 40 ] || return 0
  start_server "$target" "profile-$name"
  step "profiling $name: $transport fan-out to $FANOUT at $rate msg/s"
  (sleep 3; perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$SERVER_PID" \
     -o "$OUT/profile-$name.data" -- sleep 3) >"$OUT/profile-$name.record.out" 2>&1 &
  local record=$!
  (sleep 3; perf stat -e syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev \
     -e syscalls:sys_enter_recvfrom,syscalls:sys_enter_read \
     -x, -o "$OUT/profile-$name.syscalls" -p "$SERVER_PID" -- sleep 3) >/dev/null 2>&1 &
  local stat=$!
  echo "${RT[*]} taskset -c $LOAD_CORE $LOAD rate --target $target --transport $transport --subscribers $FANOUT --rate $rate --duration 8 --url \$URL --server-pid \$PID --json" \
    >"$OUT/profile-$name.cmd"
  timeout 60 "${RT[@]}" taskset -c "$LOAD_CORE" "$LOAD" rate --target "$target" --transport "$transport" \
    --subscribers "$FANOUT" --rate "$rate" --duration 8 --url "$SERVER_URL" \
    --server-pid "$SERVER_PID" --json >"$OUT/profile-$name.json" 2>"$OUT/profile-$name.err" || true
  wait "$record" "$stat" || true
  stop_server
  perf report -i "$OUT/profile-$name.data" --stdio --no-children --sort dso -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | sed 's/[[:space:]]*$//' >"$OUT/profile-$name.dso" || true
  perf report -i "$OUT/profile-$name.data" --stdio --children --sort symbol -g none --percent-limit 1 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | grep -v '(inlined)' | sed 's/ \{3,\}-  .*$//; s/[[:space:]]*$//' \
    >"$OUT/profile-$name.children" || true
  rm -f "$OUT/profile-$name.data"
}
if want profile && command -v perf >/dev/null; then
  profile pushlab-ws pushlab ws "$PROFILE_RATE"
  profile floor-ws floor ws "$PROFILE_RATE"
  profile pushlab-sse pushlab sse "$PROFILE_RATE"
  profile pushlab-longpoll pushlab longpoll "$PROFILE_LP_RATE"
  profile floor-longpoll floor longpoll "$PROFILE_LP_RATE"
fi

# 7. The criterion benches, if there is time left: server and clients in one
#    process, all on the load generator's core.
if want criterion && [ "$QUICK" != 1 ] && [ $(( BUDGET_SECS - ($(date +%s) - START) )) -gt 150 ]; then
  step "cargo bench"
  echo "${RT[*]} taskset -c $LOAD_CORE cargo bench --locked --bench log_core --bench transport_latency -- --noplot" >"$OUT/criterion.cmd"
  timeout 300 "${RT[@]}" taskset -c "$LOAD_CORE" cargo bench --locked --bench log_core --bench transport_latency -- --noplot \
    >"$OUT/criterion.out" 2>&1 || true
fi

# 8. HTTPS, HTTP/2 and WebTransport (not in the default run; docs/benchmarks.md
#    has its own section, written by report-secure.py).
#    webtransport: one server under --webtransport (the WebSocket and HTTP
#      on plain TCP, WebTransport on UDP at the same port number) serves `ws`
#      and `wt` alike. Latency to one subscriber, messages and cursor moves
#      (`wt` carries cursor moves on its stream, `wt-datagrams` as
#      datagrams); fan-out to $FANOUT at a fixed rate, for server CPU per
#      delivery and, for cursor moves, the datagrams lost; the fan-out
#      search; and memory per idle session.
#    tls: `wss`, SSE over HTTPS/1.1 and SSE over HTTP/2 from a server under
#      --tls, against `ws` and `sse` from the plain server: the same
#      latency, fixed-rate and search runs, and memory per idle connection.
#    The fixed rate, $SECURE_RATE msg/s to $FANOUT, is one every transport
#    keeps up with on this machine, so CPU per delivery is a cost and not a
#    ceiling. SECURE_SEARCH=0 leaves the searches out: on a machine that
#    other work keeps busy they measure the neighbours, not the server,
#    while CPU per delivery (the server's own CPU time) still holds.
SECURE_RATE=${SECURE_RATE:-20}
SECURE_SEARCH=${SECURE_SEARCH:-1}
secure_search() { [ "$SECURE_SEARCH" = 1 ] && measure "$@" || true; }
WT_IDLE=${WT_IDLE:-$FANOUT}
if want tls || want webtransport; then
  # Every QUIC handshake of a crowd comes from 8 loopback addresses.
  export PUSHLAB_WT_IP_HANDSHAKES=1024
  LATENCY=(--subscribers 1 --rate 100 --duration "$LAT_SECS")
  FIXED=(--subscribers "$FANOUT" --rate "$SECURE_RATE" --duration "$LAT_SECS")
  for t in ws sse; do
    measure "secure-latency-$t" 60 pushlab-wt rate --transport "$t" "${LATENCY[@]}"
    measure "secure-fixed-$t" 90 pushlab-wt rate --transport "$t" "${FIXED[@]}"
  done
  secure_search secure-search-ws 360 pushlab-wt search --transport ws --start 128 "${SEARCH[@]}"
fi
if want webtransport; then
  measure secure-latency-wt 60 pushlab-wt rate --transport wt "${LATENCY[@]}"
  measure secure-fixed-wt 90 pushlab-wt rate --transport wt "${FIXED[@]}"
  for t in ws wt wt-datagrams; do
    measure "secure-cursors-latency-$t" 60 pushlab-wt rate --transport "$t" --events cursors "${LATENCY[@]}"
    measure "secure-cursors-fixed-$t" 90 pushlab-wt rate --transport "$t" --events cursors "${FIXED[@]}"
  done
  secure_search secure-search-wt 360 pushlab-wt search --transport wt --start 16 "${SEARCH[@]}"
  for t in ws wt; do
    measure "secure-idle-$t" 120 pushlab-wt idle --transport "$t" --subscribers "$WT_IDLE"
  done
fi
if want tls; then
  for t in ws sse sse-h2; do
    measure "secure-latency-tls-$t" 60 pushlab-tls rate --transport "$t" "${LATENCY[@]}"
    measure "secure-fixed-tls-$t" 90 pushlab-tls rate --transport "$t" "${FIXED[@]}"
  done
  secure_search secure-search-sse 360 pushlab-wt search --transport sse --start 128 "${SEARCH[@]}"
  for t in ws sse sse-h2; do
    secure_search "secure-search-tls-$t" 360 pushlab-tls search --transport "$t" --start 128 "${SEARCH[@]}"
  done
  for t in ws sse-h2; do
    measure "secure-idle-tls-$t" 120 pushlab-tls idle --transport "$t" --subscribers "$WT_IDLE"
  done
fi

echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "elapsed: $(( $(date +%s) - START )) s (builds excluded)" >>"$OUT/machine.txt"

if [[ ",$ONLY," =~ ,(latency|wire|fanout|idle|cost|redis|profile|criterion), ]]; then
  step "writing docs/benchmarks.md and the tables in docs/transports.md"
  python3 "$BENCH/report.py" "$OUT"
fi
if want tls || want webtransport; then
  step "writing the HTTPS, HTTP/2 and WebTransport section of docs/benchmarks.md"
  python3 "$BENCH/report-secure.py" "$OUT"
fi
step "done: $OUT"
