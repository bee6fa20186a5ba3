#!/usr/bin/env bash
# pushlab's own WebSocket path against the same contract served through
# actix-ws: `pushlab-actix-ws` runs pushlab's room and log behind an ordinary
# actix-ws handler, so only the socket layer differs. The figures in
# docs/architecture.md ("Why not actix-ws") come from this script.
#
#   crates/pushlab-bench/ws-compare.sh
#   RUNS=3 IDLE_COUNTS="1000" RATE=50 crates/pushlab-bench/ws-compare.sh
#   ONLY=fanout RUNS=4 crates/pushlab-bench/ws-compare.sh   some parts only
#                                     (idle, fanout, oversized)
#
# Method, as in run.sh: each server runs alone on core 1 (`taskset -c 1`, one
# worker, no rate limit), the load generator on core 0 (`taskset -c 0`), and
# every measurement gets a fresh server. Each measurement runs RUNS times,
# the two servers taking turns, so a noisy moment on this shared machine
# shows up as a difference between runs rather than between servers.
#
#  - idle: N sockets connect and stay; the server's RSS rise per socket.
#    Registered (each socket registers a session and gets everyone's join,
#    as a chat client does) up to REGISTER_MAX sockets; listening only
#    (`hello`, no session) at every count.
#  - fan-out: FANOUT listening sockets and one registered publisher at RATE
#    messages a second for DURATION seconds; the server's CPU time per
#    delivery. RATE is low enough that neither server saturates its core, so
#    the CPU time is the cost of the work and not a ceiling.
#  - oversized frame: one frame whose header declares 1 GiB, past both
#    servers' 64 KiB frame limit, then OVERSIZED_SEND bytes of its payload
#    (oversized-frame.py): whether the server refuses it at the header, and
#    how much its RSS grows meanwhile.
#
# Raw JSON and the exact commands go to target/ws-compare/<time>/, and a
# summary table to summary.md there.
set -euo pipefail
# Every load client comes from 127.0.0.1, so pushlab's per-address limits are
# off (through the environment, which pushlab-actix-ws ignores).
export PUSHLAB_IP_CONNECTIONS=0 PUSHLAB_IP_SESSIONS=0 PUSHLAB_IP_REGISTRATIONS=0 \
  PUSHLAB_IP_RATE_LIMIT=0 PUSHLAB_IP_ROOMS=0
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-2}
IDLE_COUNTS=${IDLE_COUNTS:-1000 10000}
REGISTER_MAX=${REGISTER_MAX:-1000}
FANOUT=${FANOUT:-1000}
RATE=${RATE:-50}
DURATION=${DURATION:-10}
OVERSIZED_SEND=${OVERSIZED_SEND:-67108864}
ONLY=${ONLY:-idle,fanout,oversized}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
export RUST_BACKTRACE=0

step() { printf '\n==> %s\n' "$*" >&2; }

step "building (release)"
cargo build --release --locked --workspace --bin pushlab --bin pushlab-actix-ws --bin pushlab-load

OUT="target/ws-compare/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
LOAD=target/release/pushlab-load
source crates/pushlab-bench/servers.sh

# start_server pushlab|actix-ws NAME: a fresh server on a free port, pinned
# to the server core; sets SERVER_PID and SERVER_URL.
start_server() {
  case "$1" in
    pushlab) launch "$2" taskset -c "$SERVER_CORE" target/release/pushlab --addr 127.0.0.1:0 \
               --rate-limit 0 --workers 1 ;;
    actix-ws) launch "$2" taskset -c "$SERVER_CORE" target/release/pushlab-actix-ws --addr 127.0.0.1:0 \
                --rate-limit 0 --workers 1 ;;
  esac
}

# measure NAME SERVER pushlab-load ARGS...: one measurement on a fresh
# server, its JSON saved as NAME.json and its command as NAME.cmd.
measure() {
  local name=$1 server=$2; shift 2
  start_server "$server" "$name"
  local args=("$@" --url "$SERVER_URL" --server-pid "$SERVER_PID" --json)
  echo "taskset -c $LOAD_CORE $LOAD ${args[*]}" \
    | sed "s#$SERVER_URL#\$URL#; s#--server-pid $SERVER_PID#--server-pid \$PID#" >"$OUT/$name.cmd"
  step "$name ($server): $(cat "$OUT/$name.cmd")"
  if ! timeout --kill-after=5 300 taskset -c "$LOAD_CORE" "$LOAD" "${args[@]}" \
      >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    echo "failed or timed out; see $name.err" >"$OUT/$name.skipped"
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
  echo "actix-ws: $(sed -n '/^name = "actix-ws"$/{n;s/version = "\(.*\)"/\1/p}' Cargo.lock)"
  echo "pushlab commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates Cargo.toml || echo ' (with uncommitted changes)')"
  echo "server on core $SERVER_CORE, load generator on core $LOAD_CORE; runs: $RUNS"
} >"$OUT/machine.txt"

for run in $(seq "$RUNS"); do
  if want idle; then
    for n in $IDLE_COUNTS; do
      for server in pushlab actix-ws; do
        if [ "$n" -le "$REGISTER_MAX" ]; then
          measure "idle-registered-$n-$server-$run" "$server" idle --transport ws \
            --subscribers "$n" --register --connect-concurrency 64
        fi
        measure "idle-listening-$n-$server-$run" "$server" idle --transport ws --subscribers "$n"
      done
    done
  fi
  if want fanout; then
    for server in pushlab actix-ws; do
      measure "fanout-$FANOUT-$server-$run" "$server" rate --transport ws \
        --subscribers "$FANOUT" --rate "$RATE" --duration "$DURATION"
    done
  fi
done
if want oversized; then
  for server in pushlab actix-ws; do
    start_server "$server" "oversized-$server"
    step "oversized frame ($server)"
    echo "python3 crates/pushlab-bench/oversized-frame.py \$URL \$PID --send $OVERSIZED_SEND" >"$OUT/oversized-$server.cmd"
    python3 crates/pushlab-bench/oversized-frame.py "$SERVER_URL" "$SERVER_PID" --send "$OVERSIZED_SEND" \
      >"$OUT/oversized-$server.json" 2>"$OUT/oversized-$server.err" || true
    stop_server
  done
fi
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for path in sorted(out.glob("*.json")):
    m = re.match(r"(idle-registered|idle-listening|fanout)-(\d+)-(pushlab|actix-ws)-(\d+)$", path.stem)
    if not m:
        continue
    kind, n, server, run = m.groups()
    r = json.loads(path.read_text())
    if kind == "fanout":
        deliveries = r["deliveries"]
        cpu_secs = r["server_cpu_percent"] / 100 * r["duration_secs"]
        value = (f"{cpu_secs / max(deliveries, 1) * 1e6:.2f} µs/delivery "
                 f"(CPU {r['server_cpu_percent']:.0f}%, {deliveries} delivered, "
                 f"missing {r['missing'] + r['missing_seqs']}, p50 {r['latency']['p50_ms']:.2f} ms, "
                 f"p99 {r['latency']['p99_ms']:.2f} ms)")
    else:
        value = (f"{r['kib_per_connection']:.1f} KiB/socket "
                 f"({r['connected']}/{r['subscribers']} connected, RSS {r['rss_before_kib']} → {r['rss_after_kib']} KiB)")
    rows.setdefault((kind, int(n)), {}).setdefault(server, []).append((int(run), value))
print(f"# ws-compare: {out.name}\n")
print("| measurement | sockets | pushlab (own path) | actix-ws |")
print("| --- | ---: | --- | --- |")
for (kind, n), servers in sorted(rows.items()):
    cells = []
    for server in ("pushlab", "actix-ws"):
        runs = sorted(servers.get(server, []))
        cells.append("<br>".join(f"run {run}: {value}" for run, value in runs) or "-")
    print(f"| {kind} | {n} | {cells[0]} | {cells[1]} |")
cells = []
for server in ("pushlab", "actix-ws"):
    path = out / f"oversized-{server}.json"
    try:
        r = json.loads(path.read_text())
        cells.append(f"{r['outcome']} after {r['payload_sent_bytes'] >> 20} MiB of payload; "
                     f"RSS +{r['rss_growth_kib'] >> 10} MiB")
    except (OSError, ValueError):
        cells.append("-")
print(f"| oversized frame (declares 1 GiB) | 1 | {cells[0]} | {cells[1]} |")
PY
step "done: $OUT"
