# servers.sh: sourced by run.sh and ws-compare.sh. Servers on free ports,
# stopped on exit whatever happens.
#
# Needs OUT (the results folder). `launch NAME COMMAND...` stops whatever
# runs, starts COMMAND in the background with its output in
# $OUT/NAME.server.out and .err, and waits for its "listening on" line; it
# sets SERVER_PID and SERVER_URL. `launch_beside NAME COMMAND...` does the
# same without stopping anything (a second pushlab node), and
# `launch_redis NAME PREFIX...` starts a redis-server beside whatever runs
# (setting REDIS_PID and REDIS_URL). `stop_server` stops every process
# started since the last stop, the last started first.

SERVER_PID=""
SERVER_URL=""
REDIS_PID=""
REDIS_URL=""
# Every process started since the last stop_server, oldest first, and the
# folders to remove with them.
STARTED_PIDS=()
STARTED_DIRS=()

stop_server() {
  local i pid
  for (( i = ${#STARTED_PIDS[@]} - 1; i >= 0; i-- )); do
    pid=${STARTED_PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  [ ${#STARTED_DIRS[@]} -eq 0 ] || rm -rf "${STARTED_DIRS[@]}"
  STARTED_PIDS=()
  STARTED_DIRS=()
  SERVER_PID=""
  REDIS_PID=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

launch_beside() {
  local name=$1; shift
  local log="$OUT/$name.server.out"
  : >"$log"
  "$@" >"$log" 2>"$OUT/$name.server.err" &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  for _ in $(seq 100); do
    SERVER_URL=$(sed -n 's/.* listening on [a-z]*:\/\/\(.*\)$/http:\/\/\1/p' "$log" | head -1)
    [ -n "$SERVER_URL" ] && return 0
    sleep 0.1
  done
  echo "the server for $name did not start; see $OUT/$name.server.err" >&2
  exit 1
}

launch() {
  stop_server
  launch_beside "$@"
}

# A free TCP port on 127.0.0.1, as the kernel hands one out; redis-server
# cannot be asked to pick one itself (`--port 0` turns TCP off).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# launch_redis NAME PREFIX...: Debian's redis-server, run under PREFIX (a
# taskset, say), on a free port, keeping nothing on disk (no RDB snapshots,
# no AOF) and working in a temporary folder of its own that goes with it.
launch_redis() {
  local name=$1; shift
  local log="$OUT/$name.redis.out" dir port
  dir=$(mktemp -d)
  STARTED_DIRS+=("$dir")
  # Another process may take the port between free_port and the bind.
  for _ in 1 2 3; do
    port=$(free_port)
    : >"$log"
    "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$dir" --daemonize no --logfile '' >"$log" 2>&1 &
    REDIS_PID=$!
    STARTED_PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
      if grep -q 'Ready to accept connections' "$log"; then
        REDIS_URL="redis://127.0.0.1:$port/0"
        return 0
      fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
  done
  echo "redis-server for $name did not start; see $log" >&2
  exit 1
}
