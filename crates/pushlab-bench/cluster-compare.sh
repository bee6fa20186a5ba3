#!/usr/bin/env bash
# Behind a round-robin proxy: two socket.io nodes sharing a Redis
# (@socket.io/redis-streams-adapter) against two pushlab nodes sharing a
# Redis (--redis), each pair behind nginx with no ip_hash and no sticky
# cookie, so every request and every connection may go to either node. The
# same small workload runs through nginx against each transport, and once
# more against socket.io's polling with ip_hash, the sticky control. Writes
# the section "Behind a round-robin proxy" of docs/benchmarks.md.
#
#   crates/pushlab-bench/cluster-compare.sh            about a minute after the build
#   SUBSCRIBERS=50 RATE=50 crates/pushlab-bench/cluster-compare.sh
#
# Each run gets a fresh Redis (nothing kept on disk), two fresh nodes and a
# fresh nginx (configuration from scripts/nginx-cluster-conf.sh), all pinned
# to core 1 with `taskset -c 1`; the load generator runs on core 0. Every
# process this script starts is stopped on exit, whatever happens. Raw JSON
# (the load generator's, and per run the requests nginx passed to each node
# with their statuses) goes to target/bench-results/cluster-<time>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=crates/pushlab-bench

SUBSCRIBERS=${SUBSCRIBERS:-20}
RATE=${RATE:-20}
DURATION=${DURATION:-3}
POLL_MS=${POLL_MS:-100}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
NGINX=${NGINX:-/usr/sbin/nginx}
# The load generator's clients all come from 127.0.0.x through nginx, so
# pushlab's per-address limits are off.
export PUSHLAB_IP_CONNECTIONS=0 PUSHLAB_IP_SESSIONS=0 PUSHLAB_IP_REGISTRATIONS=0 \
  PUSHLAB_IP_RATE_LIMIT=0 PUSHLAB_IP_ROOMS=0
export RUST_BACKTRACE=0

step() { printf '\n==> %s\n' "$*" >&2; }

for tool in redis-server redis-cli "$NGINX" node taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install redis-server nginx nodejs util-linux)" >&2; exit 1; }
done

step "building (release) and installing the socket.io peer from its lockfile"
cargo build --release --locked --workspace --bin pushlab --bin pushlab-load
(cd "$BENCH/socketio" && npm ci --no-audit --no-fund --silent)

OUT="target/bench-results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
LOAD=target/release/pushlab-load
PIDS=()
WORK=""

# Stops every process of the cluster; then keeps nginx's log of the run
# (written as each request ends, so only now complete) and removes the rest.
stop_cluster() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  PIDS=()
  if [ -n "$WORK" ]; then
    cp "$WORK/access.log" "$OUT/$RUN.access.log" 2>/dev/null || true
    rm -rf "$WORK"
  fi
  WORK=""
}
trap stop_cluster EXIT
trap 'stop_cluster; exit 130' INT TERM

# A free port on 127.0.0.1, for redis-server and nginx, which cannot
# listen on port 0 and say which port they got.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for NAME CHECK...: runs CHECK every 0.1 s until it succeeds (10 s at most).
wait_for() {
  local name=$1; shift
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$name did not start; see $WORK" >&2
  exit 1
}

# start_node NAME COMMAND...: one node in the background, pinned to the
# server core; appends its URL (from its "listening on" line) to NODES.
start_node() {
  local name=$1; shift
  local log="$OUT/$RUN.$name.out"
  taskset -c "$SERVER_CORE" "$@" >"$log" 2>"$OUT/$RUN.$name.err" &
  PIDS+=($!)
  wait_for "$name" grep -q ' listening on ' "$log"
  NODES+=("$(sed -n 's/.* listening on http:\/\/\(.*\)$/\1/p' "$log" | head -1)")
}

# start_cluster pushlab|socketio [--ip-hash]: Redis, two nodes and nginx;
# sets PROXY_URL.
start_cluster() {
  local target=$1 balance=${2:-}
  WORK=$(mktemp -d)
  local redis_port
  redis_port=$(free_port)
  taskset -c "$SERVER_CORE" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$WORK" --daemonize no --loglevel warning >"$OUT/$RUN.redis.out" 2>&1 &
  PIDS+=($!)
  wait_for redis-server redis-cli -p "$redis_port" ping
  local redis="redis://127.0.0.1:$redis_port/0"
  NODES=()
  for node in a b; do
    case "$target" in
      pushlab) start_node "node-$node" target/release/pushlab --addr 127.0.0.1:0 --rate-limit 0 \
                 --workers 1 --redis "$redis" --trusted-proxy 127.0.0.1 ;;
      socketio) start_node "node-$node" node "$BENCH/socketio/server.js" --addr 127.0.0.1:0 \
                  --redis "$redis" ;;
    esac
  done
  local proxy_port
  proxy_port=$(free_port)
  scripts/nginx-cluster-conf.sh $balance "$WORK" "$proxy_port" "${NODES[@]}" >"$WORK/nginx.conf"
  taskset -c "$SERVER_CORE" "$NGINX" -p "$WORK" -e "$WORK/error.log" -c "$WORK/nginx.conf" &
  PIDS+=($!)
  PROXY_URL="http://127.0.0.1:$proxy_port"
  wait_for nginx bash -c "exec 3<>/dev/tcp/127.0.0.1/$proxy_port"
}

# run NAME TARGET TRANSPORT [--ip-hash]: one workload through a fresh
# cluster. NAME.json is the load generator's; NAME.access.log is nginx's
# line per request (method, URI, status, node) and NAME.nodes the two
# nodes' addresses, for the report to count what each node answered.
run() {
  RUN=$1
  local target=$2 transport=$3 balance=${4:-}
  start_cluster "$target" "$balance"
  local args=(rate --target "$target" --transport "$transport" --subscribers "$SUBSCRIBERS"
    --rate "$RATE" --duration "$DURATION" --drain 2 --poll-interval-ms "$POLL_MS" --json)
  echo "taskset -c $LOAD_CORE $LOAD ${args[*]} --url \$PROXY" >"$OUT/$RUN.cmd"
  step "$RUN: $(cat "$OUT/$RUN.cmd")"
  if ! timeout --kill-after=5 60 taskset -c "$LOAD_CORE" "$LOAD" "${args[@]}" --url "$PROXY_URL" \
      >"$OUT/$RUN.json" 2>"$OUT/$RUN.err"; then
    echo "failed or timed out; see $RUN.err" >"$OUT/$RUN.skipped"
    tail -3 "$OUT/$RUN.err" >&2 || true
  fi
  echo "${NODES[*]}" >"$OUT/$RUN.nodes"
  stop_cluster
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -srm)"
  echo "nproc: $(nproc)"
  echo "node: $(node --version)"
  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
  echo "redis: $(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')"
  echo "socket.io: $(node -p "require('./$BENCH/socketio/node_modules/socket.io/package.json').version")"
  echo "adapter: $(node -p "require('./$BENCH/socketio/node_modules/@socket.io/redis-streams-adapter/package.json').version")"
  echo "pushlab commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates Cargo.toml || echo ' (with uncommitted changes)')"
} >"$OUT/machine.txt"

for t in ws sse longpoll poll; do
  run "pushlab-$t" pushlab "$t"
done
for t in ws polling; do
  run "socketio-$t" socketio "$t"
done
run socketio-polling-ip-hash socketio polling --ip-hash

step "writing the round-robin section of docs/benchmarks.md"
python3 "$BENCH/report.py" --cluster "$OUT"
step "done: $OUT"
