# servers.sh: sourced by run.sh and ws-compare.sh. One server at a time,
# each on a free port, stopped on exit whatever happens.
#
# Needs OUT (the results folder). `launch NAME COMMAND...` stops the server
# before, starts COMMAND in the background with its output in
# $OUT/NAME.server.out and .err, and waits for its "listening on" line;
# it sets SERVER_PID and SERVER_URL.

SERVER_PID=""
SERVER_URL=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

launch() {
  stop_server
  local name=$1; shift
  local log="$OUT/$name.server.out"
  : >"$log"
  "$@" >"$log" 2>"$OUT/$name.server.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    SERVER_URL=$(sed -n 's/.* listening on [a-z]*:\/\/\(.*\)$/http:\/\/\1/p' "$log" | head -1)
    [ -n "$SERVER_URL" ] && return 0
    sleep 0.1
  done
  echo "the server for $name did not start; see $OUT/$name.server.err" >&2
  exit 1
}
