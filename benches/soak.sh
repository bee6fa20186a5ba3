#!/usr/bin/env bash
# The long soak: 10,000 connections mixed over the four transports (ws, sse,
# longpoll and poll in turn) held for 10 minutes of traffic, then everyone
# disconnects. It reports errors, missing and duplicated events (all must be
# 0), and the server's RSS before, during and after, which must come back
# close to its baseline.
#
#   benches/soak.sh                                  10,000 connections, 600 s
#   SUBSCRIBERS=2000 DURATION=60 benches/soak.sh     a shorter run
#
# The test suite runs a short version (tests/api/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
DURATION=${DURATION:-600}
RATE=${RATE:-20}
PRESENCE_TIMEOUT=5

cargo build --release --locked --bin pushlab --bin pushlab-load
OUT="target/soak-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

target/release/pushlab --addr 127.0.0.1:0 --rate-limit 0 --max-connections 20000 \
  --presence-timeout "$PRESENCE_TIMEOUT" >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  URL=$(sed -n 's/^pushlab listening on \(.*\)$/\1/p' "$OUT/server.out")
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "the server did not start" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
BASELINE=$(rss_kib)
echo "server at $URL, pid $SERVER_PID, baseline RSS ${BASELINE} KiB"

( while kill -0 "$SERVER_PID" 2>/dev/null; do
    echo "$(date +%s) $(rss_kib)" >>"$OUT/rss.log"
    sleep 5
  done ) &
SAMPLER=$!

target/release/pushlab-load rate --url "$URL" --transport mix \
  --subscribers "$SUBSCRIBERS" --rate "$RATE" --duration "$DURATION" \
  --poll-interval-ms 1000 --server-pid "$SERVER_PID" --json >"$OUT/load.json"
STATUS=$?

# Everyone has gone; give sessions their presence timeout, then measure.
sleep $((PRESENCE_TIMEOUT + 5))
AFTER=$(rss_kib)
PEAK=$(awk 'BEGIN {m = 0} {if ($2 > m) m = $2} END {print m}' "$OUT/rss.log")
STATS=$(curl -s "$URL/stats")
kill "$SAMPLER" 2>/dev/null || true

python3 - "$OUT/load.json" "$BASELINE" "$PEAK" "$AFTER" "$STATS" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
baseline, peak, after = (int(x) for x in sys.argv[2:5])
stats = json.loads(sys.argv[5])
print(json.dumps({
    "subscribers": load.get("subscribers"),
    "duration_s": load.get("duration_s"),
    "deliveries": load.get("deliveries"),
    "missing": load.get("missing"),
    "duplicates": load.get("duplicates"),
    "errors": load.get("errors"),
    "latency_ms": load.get("latency_ms"),
    "rss_kib": {"baseline": baseline, "peak": peak, "after": after},
    "server_open_after": {k: v["open"] for k, v in stats["transports"].items()},
    "online_after": stats["online"],
}, indent=2))
PY
echo "raw results in $OUT"
exit "$STATUS"
