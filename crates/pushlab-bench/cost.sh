#!/usr/bin/env bash
# Server cost per delivery and memory per idle connection, as ratios that a
# busy machine moves less than it moves absolute figures. One invocation
# prints the table (and saves it as summary.md beside the raw JSON).
#
#   crates/pushlab-bench/cost.sh                 about 12 minutes
#   ONLY=cpu crates/pushlab-bench/cost.sh        the CPU ratios only (cpu, idle)
#   ROUNDS=5 PUSHLAB_BIN=old/pushlab crates/pushlab-bench/cost.sh
#
# CPU: FANOUT (1000) subscribers for SECS (8) s of publishing; the floor
# (pushlab-floor, tokio-tungstenite) and pushlab `ws` and `sse` at WS_RATE
# (50) msg/s, pushlab `longpoll` and the floor's long-poll (pushlab-floor's
# `GET /longpoll`: HTTP/1.1 keep-alive, httparse, a bounded log) at LP_RATE
# (20), and the socket.io peer's
# `websocket` at WS_RATE, shown beside them but in no ratio (SOCKETIO=0
# leaves it out). Each round runs them one after the other, in reverse order
# every other round, each on a fresh
# server, so a noisy moment on a shared machine lands on neighbours alike.
# Server CPU per delivery (CPU over the publishing window / deliveries) is
# turned into ratios within the round (ws/floor, sse/ws, longpoll/ws,
# floor longpoll/ws, longpoll/floor longpoll), and each ratio's median over
# ROUNDS (3) rounds is the figure.
# Memory: IDLE (5000) connections held HOLD (20) s: WebSockets registering a
# session each (so each holds a chat client's state), the same taking their
# session's WebRTC signals (`signals=true`, the page's WebRTC transport),
# listening WebSockets, SSE streams and held anonymous long-polls; from a
# server under `--tls`, `wss` and SSE over HTTP/2; from one under
# `--webtransport`, WebTransport sessions: the server's RSS rise per
# connection.
# As in run.sh the server (`--workers 1 --rate-limit 0`, per-address limits
# off) runs pinned with `taskset -c 1`, pushlab-load with `taskset -c 0`.
# Raw JSON, every command (NAME.cmd) and machine.txt (with the load average
# before and after) go to target/cost/<utc-time>/, or COST_OUT (run.sh's
# `cost` section puts them beside its other results).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=crates/pushlab-bench
TARGET=${CARGO_TARGET_DIR:-target}

export PUSHLAB_IP_CONNECTIONS=0 PUSHLAB_IP_SESSIONS=0 PUSHLAB_IP_REGISTRATIONS=0 \
  PUSHLAB_IP_RATE_LIMIT=0 PUSHLAB_IP_ROOMS=0
export RUST_BACKTRACE=0

PUSHLAB_BIN=$(realpath -m "${PUSHLAB_BIN:-$TARGET/release/pushlab}")
FLOOR_BIN=$(realpath -m "${FLOOR_BIN:-$TARGET/release/pushlab-floor}")
LOAD=$(realpath -m "${LOAD:-$TARGET/release/pushlab-load}")
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-cpu,idle}
SOCKETIO=${SOCKETIO:-1}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
FANOUT=${FANOUT:-1000}
SECS=${SECS:-8}
WS_RATE=${WS_RATE:-50}
LP_RATE=${LP_RATE:-20}
IDLE=${IDLE:-5000}
HOLD=${HOLD:-20}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}

step() { printf '==> %s\n' "$*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  step "building pushlab, pushlab-floor and pushlab-load (release)"
  cargo build --release --locked --workspace --bins
fi
for bin in "$PUSHLAB_BIN" "$FLOOR_BIN" "$LOAD"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
if [ "$SOCKETIO" = 1 ] && [ ! -d "$BENCH/socketio/node_modules" ]; then
  (cd "$BENCH/socketio" && npm ci --no-audit --no-fund --silent)
fi

OUT=${COST_OUT:-"$TARGET/cost/$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$OUT"
START=$(date +%s)
source "$BENCH/servers.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "pushlab: $PUSHLAB_BIN sha256 $(sha256sum "$PUSHLAB_BIN" | cut -c1-16)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates || echo ' (with uncommitted changes)')"
  echo "rounds: $ROUNDS; fan-out $FANOUT subscribers, ${SECS}s; ws and sse $WS_RATE msg/s, longpoll $LP_RATE; idle $IDLE held ${HOLD}s"
} >"$OUT/machine.txt"

# run NAME SERVER pushlab-load ARGS...: one run on a fresh server (pushlab,
# floor or socketio), its result in NAME.json and its commands in NAME.cmd.
run() {
  local name=$1 kind=$2; shift 2
  local server=(taskset -c "$SERVER_CORE" "$PUSHLAB_BIN" --addr 127.0.0.1:0 --rate-limit 0 --workers 1)
  case "$kind" in
    pushlab-tls) server+=(--tls) ;;
    # Every QUIC handshake of a crowd comes from 8 loopback addresses.
    pushlab-wt) server+=(--webtransport --wt-ip-handshakes 1024) ;;
    floor) server=(taskset -c "$SERVER_CORE" "$FLOOR_BIN" --addr 127.0.0.1:0) ;;
    socketio) server=(taskset -c "$SERVER_CORE" node "$BENCH/socketio/server.js" --addr 127.0.0.1:0) ;;
  esac
  launch "$name" "${server[@]}"
  # The server prints its https:// URL, which launch reads as http://.
  [ "$kind" = pushlab-tls ] && SERVER_URL=https://${SERVER_URL#http://}
  local args=("$@" --url "$SERVER_URL" --server-pid "$SERVER_PID" --json)
  {
    echo "${server[*]}"
    echo "taskset -c $LOAD_CORE $LOAD ${args[*]}" \
      | sed "s#$SERVER_URL#\$URL#; s#--server-pid $SERVER_PID#--server-pid \$PID#"
  } >"$OUT/$name.cmd"
  step "$name (loadavg $(cut -d' ' -f1 /proc/loadavg))"
  if ! timeout --kill-after=5 300 taskset -c "$LOAD_CORE" "$LOAD" "${args[@]}" \
      >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    echo "failed or timed out; see $name.err" >"$OUT/$name.skipped"
    tail -3 "$OUT/$name.err" >&2 || true
  fi
  stop_server
}

if want cpu; then
  runs=(floor-ws:floor:ws:"$WS_RATE" pushlab-ws:pushlab:ws:"$WS_RATE"
        pushlab-sse:pushlab:sse:"$WS_RATE" pushlab-longpoll:pushlab:longpoll:"$LP_RATE"
        floor-longpoll:floor:longpoll:"$LP_RATE")
  [ "$SOCKETIO" = 1 ] && runs+=(socketio-ws:socketio:ws:"$WS_RATE")
  for round in $(seq "$ROUNDS"); do
    order=("${runs[@]}")
    if [ $(( round % 2 )) = 0 ]; then
      order=(); for (( i = ${#runs[@]} - 1; i >= 0; i-- )); do order+=("${runs[i]}"); done
    fi
    for entry in "${order[@]}"; do
      IFS=: read -r name kind transport rate <<<"$entry"
      run "cpu-$name-$round" "$kind" rate --target "$kind" --transport "$transport" \
        --subscribers "$FANOUT" --rate "$rate" --duration "$SECS"
    done
  done
fi

if want idle; then
  run idle-ws-registered pushlab idle --target pushlab --transport ws --register \
    --subscribers "$IDLE" --hold "$HOLD" --connect-concurrency 64
  run idle-ws-signals pushlab idle --target pushlab --transport ws --register --signals \
    --subscribers "$IDLE" --hold "$HOLD" --connect-concurrency 64
  for t in ws sse longpoll; do
    run "idle-$t" pushlab idle --target pushlab --transport "$t" --subscribers "$IDLE" --hold "$HOLD"
  done
  # The TLS handshakes of a crowd take the server's core for a while; a
  # smaller gate keeps them from timing each other out. WebTransport
  # reads the certificate hash to pin from the server's /config.
  for t in ws sse-h2; do
    run "idle-tls-$t" pushlab-tls idle --target pushlab --transport "$t" --subscribers "$IDLE" \
      --hold "$HOLD" --connect-concurrency 64
  done
  run idle-wt pushlab-wt idle --target pushlab --transport wt \
    --subscribers "$IDLE" --hold "$HOLD" --connect-concurrency 64
fi

echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "elapsed: $(( $(date +%s) - START )) s" >>"$OUT/machine.txt"
python3 "$BENCH/cost-table.py" "$OUT" | tee "$OUT/summary.md"
step "done: $OUT"
