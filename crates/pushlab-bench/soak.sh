#!/usr/bin/env bash
# The long soak: 10,000 connections mixed over the four transports (ws, sse,
# longpoll and poll in turn) held for 10 minutes of traffic, then everyone
# disconnects. It reports errors, missing and duplicated events (all must be
# 0), and the server's RSS before, during and after, which must come back
# close to its baseline.
#
#   crates/pushlab-bench/soak.sh                                10,000 connections, 600 s
#   SUBSCRIBERS=2000 DURATION=60 crates/pushlab-bench/soak.sh   a shorter run
#
# The test suite runs a short version (tests/api/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
DURATION=${DURATION:-600}
# 5 msg/s to 10,000 readers is 50,000 deliveries a second: well within what
# one core sustains, so the soak measures endurance, not overload.
RATE=${RATE:-5}
PRESENCE_TIMEOUT=5

cargo build --release --locked --workspace --bin pushlab --bin pushlab-load
OUT="target/soak-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

# Every client comes from 127.0.0.1, so the per-address limits are off.
target/release/pushlab --addr 127.0.0.1:0 --rate-limit 0 --max-connections 20000 \
  --ip-connections 0 --ip-sessions 0 --ip-registrations 0 --ip-rate-limit 0 \
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
  --poll-interval-ms 1000 --server-pid "$SERVER_PID" --connect-concurrency 512 \
  --json >"$OUT/load.json"

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
summary = {
    "subscribers": load["subscribers"],
    "connected": load["connected"],
    "duration_secs": load["duration_secs"],
    "published": load["published"],
    "deliveries": load["deliveries"],
    "missing": load["missing"],
    "duplicated": load["duplicated"],
    "missing_seqs": load["missing_seqs"],
    "duplicated_seqs": load["duplicated_seqs"],
    "failed_subscribers": load["failed"],
    "latency_ms": {k: load["latency"][k] for k in ("p50_ms", "p99_ms", "max_ms")},
    "server_cpu_percent": round(load["server_cpu_percent"]),
    "rss_kib": {"baseline": baseline, "peak": peak, "after": after},
    "server_open_after": {k: v["open"] for k, v in stats["transports"].items()},
    "online_after": stats["online"],
}
print(json.dumps(summary, indent=2))
problems = []
for key in ("missing", "duplicated", "missing_seqs", "duplicated_seqs", "failed_subscribers"):
    if summary[key]:
        problems.append(f"{key}: {summary[key]}")
if summary["connected"] != summary["subscribers"]:
    problems.append("not every subscriber connected")
if any(summary["server_open_after"].values()) or summary["online_after"]:
    problems.append("the server still holds connections or sessions")
# "Close to its baseline": at most a quarter of the rise is still held.
if after - baseline > (peak - baseline) / 4:
    problems.append(f"RSS after ({after} KiB) did not fall back towards the baseline ({baseline} KiB)")
for problem in problems:
    print("FAIL:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "raw results in $OUT"
