#!/usr/bin/env bash
# Two pushlab builds side by side, BEFORE and AFTER a change, with run.sh's
# methods for latency, fan-out and idle memory. Writes nothing under docs/.
#
#   crates/pushlab-bench/ab.sh BEFORE_BIN AFTER_BIN           about 13 minutes
#   ROUNDS=5 SEARCH=1 crates/pushlab-bench/ab.sh old/pushlab target/release/pushlab
#   ONLY=fanout,idle crates/pushlab-bench/ab.sh A B     some sections only
#                                          (latency, fanout, search, idle)
#
# Each measurement runs ROUNDS times (default 3), BEFORE then AFTER each
# time, so a noisy moment on this shared machine lands on both builds alike;
# every run gets a fresh server. As in run.sh: the server (`--workers 1
# --rate-limit 0`, per-address limits off) runs pinned with `taskset -c 1`,
# pushlab-load with `taskset -c 0`, both under ordinary scheduling.
#  - latency: 1 subscriber, 100 msg/s for LAT_SECS (10) s, on ws, sse,
#    longpoll and poll (asking every 50 ms): p50 and p99 ms.
#  - fanout: FANOUT (1000) subscribers for FANOUT_SECS (8) s at a rate
#    neither build should saturate (ws and sse WS_RATE=SSE_RATE=50 msg/s,
#    longpoll LP_RATE=20): server CPU µs per delivery (CPU over the
#    publishing window / deliveries), p50 and p99 ms.
#  - search (only with SEARCH=1, about 6 more minutes): run.sh's ws fan-out
#    search to FANOUT subscribers from 128 msg/s, BISECT (1) bisection steps,
#    p99 <= 50 ms: the highest sustained rate.
#  - idle: IDLE (5000) connections each of ws listening, sse and held
#    longpoll, and REGISTER (1000) registered ws sockets (each gets everyone's
#    welcome and join, quadratic in the count, hence fewer): the server's RSS
#    rise per connection, KiB.
# Raw JSON, each run's server and load commands (NAME.cmd) and machine.txt go
# to target/ab/<utc-time>/; the table (medians over rounds, each round's
# values, AFTER/BEFORE) is printed and saved there as summary.md. The load
# generator is built here unless LOAD names one (or NO_BUILD=1).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BEFORE_BIN AFTER_BIN   (env: ROUNDS, ONLY, SEARCH, LAT_SECS, FANOUT, FANOUT_SECS, IDLE, REGISTER, LOAD)" >&2
  exit 2
fi
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
for bin in "$BIN_A" "$BIN_B"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
[ -z "${LOAD:-}" ] || LOAD=$(realpath "$LOAD")
cd "$(dirname "$0")/../.."
BENCH=crates/pushlab-bench

# Every load client comes from 127.0.0.1, so pushlab's per-address limits are
# off (through the environment, which a build without those flags ignores).
export PUSHLAB_IP_CONNECTIONS=0 PUSHLAB_IP_SESSIONS=0 PUSHLAB_IP_REGISTRATIONS=0 \
  PUSHLAB_IP_RATE_LIMIT=0 PUSHLAB_IP_ROOMS=0
export RUST_BACKTRACE=0

ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-latency,fanout,idle}
[ "${SEARCH:-0}" = 1 ] && ONLY="$ONLY,search"
want() { [[ ",$ONLY," == *",$1,"* ]]; }
LAT_SECS=${LAT_SECS:-10}
FANOUT=${FANOUT:-1000}
FANOUT_SECS=${FANOUT_SECS:-8}
WS_RATE=${WS_RATE:-50}
SSE_RATE=${SSE_RATE:-50}
LP_RATE=${LP_RATE:-20}
STEP_SECS=${STEP_SECS:-5}
BISECT=${BISECT:-1}
IDLE=${IDLE:-5000}
REGISTER=${REGISTER:-1000}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}

step() { printf '\n==> %s\n' "$*" >&2; }

if [ -z "${LOAD:-}" ]; then
  LOAD=$(realpath -m "${CARGO_TARGET_DIR:-target}/release/pushlab-load")
  if [ "${NO_BUILD:-0}" != 1 ]; then
    step "building pushlab-load (release)"
    cargo build --release --locked -p pushlab-bench --bin pushlab-load
  fi
fi
[ -x "$LOAD" ] || { echo "no load generator at $LOAD" >&2; exit 2; }

OUT="target/ab/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
START=$(date +%s)
source "$BENCH/servers.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -srm)"
  echo "nproc: $(nproc)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "before: $BIN_A sha256 $(sha256sum "$BIN_A" | cut -c1-16)"
  echo "after: $BIN_B sha256 $(sha256sum "$BIN_B" | cut -c1-16)"
  echo "load generator: $LOAD sha256 $(sha256sum "$LOAD" | cut -c1-16)"
  echo "bench commit: $(git rev-parse --short HEAD)"
  echo "rounds: $ROUNDS; sections: $ONLY"
  echo "latency: ${LAT_SECS}s; fanout: $FANOUT subscribers, ${FANOUT_SECS}s, ws $WS_RATE sse $SSE_RATE longpoll $LP_RATE msg/s"
  echo "idle: $IDLE (registered ws: $REGISTER)"
  echo "scheduling: ordinary (SCHED_OTHER); server on core $SERVER_CORE, load generator on core $LOAD_CORE"
} >"$OUT/machine.txt"

# measure NAME SIDE CAP_SECS pushlab-load ARGS...: one run on a fresh server
# of side A (BEFORE) or B (AFTER); NAME-SIDE-ROUND.json and .cmd.
measure() {
  local name="$1-$2-$ROUND" side=$2 cap=$3; shift 3
  local bin=$BIN_A
  [ "$side" = B ] && bin=$BIN_B
  local server=(taskset -c "$SERVER_CORE" "$bin" --addr 127.0.0.1:0 --rate-limit 0 --workers 1)
  launch "$name" "${server[@]}"
  local args=("$@" --url "$SERVER_URL" --server-pid "$SERVER_PID" --json)
  {
    echo "${server[*]}"
    echo "taskset -c $LOAD_CORE $LOAD ${args[*]}" \
      | sed "s#$SERVER_URL#\$URL#; s#--server-pid $SERVER_PID#--server-pid \$PID#"
  } >"$OUT/$name.cmd"
  step "$name: $(tail -1 "$OUT/$name.cmd")"
  if ! timeout --kill-after=5 "$cap" taskset -c "$LOAD_CORE" "$LOAD" "${args[@]}" \
      >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    echo "failed or timed out after ${cap}s; see $name.err" >"$OUT/$name.skipped"
    tail -3 "$OUT/$name.err" >&2 || true
  fi
  stop_server
}

# both NAME CAP ARGS...: the measurement on BEFORE, then on AFTER.
both() {
  local name=$1 cap=$2; shift 2
  measure "$name" A "$cap" "$@"
  measure "$name" B "$cap" "$@"
}

for ROUND in $(seq "$ROUNDS"); do
  step "round $ROUND of $ROUNDS"
  if want latency; then
    for t in ws sse longpoll poll; do
      both "latency-$t" 60 rate --target pushlab --transport "$t" \
        --subscribers 1 --rate 100 --duration "$LAT_SECS" --poll-interval-ms 50
    done
  fi
  if want fanout; then
    for run in ws:"$WS_RATE" sse:"$SSE_RATE" longpoll:"$LP_RATE"; do
      both "fanout-${run%%:*}" 120 rate --target pushlab --transport "${run%%:*}" \
        --subscribers "$FANOUT" --rate "${run#*:}" --duration "$FANOUT_SECS"
    done
  fi
  if want search; then
    both search-ws 360 search --target pushlab --transport ws --start 128 \
      --subscribers "$FANOUT" --duration "$STEP_SECS" --bisect "$BISECT" --p99-limit-ms 50
  fi
  if want idle; then
    both idle-ws 180 idle --target pushlab --transport ws --subscribers "$IDLE"
    both idle-ws-registered 300 idle --target pushlab --transport ws --subscribers "$REGISTER" \
      --register --connect-concurrency 64
    for t in sse longpoll; do
      both "idle-$t" 180 idle --target pushlab --transport "$t" --subscribers "$IDLE"
    done
  fi
done

echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "elapsed: $(( $(date +%s) - START )) s (builds excluded)" >>"$OUT/machine.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, pathlib, re, statistics, sys
out = pathlib.Path(sys.argv[1])
machine = (out / "machine.txt").read_text()
line = lambda key: re.search(rf"^{key}: (.*)$", machine, re.M).group(1)

# (row label, file stem, value of one JSON result or None)
def cpu_us(r):
    if r.get("server_cpu_percent") is None or not r["deliveries_per_sec"]:
        return None
    return r["server_cpu_percent"] / 100 / r["deliveries_per_sec"] * 1e6
p50 = lambda r: r["latency"]["p50_ms"]
p99 = lambda r: r["latency"]["p99_ms"]
rows = []
for t in ("ws", "sse", "longpoll", "poll"):
    rows += [(f"latency {t}: p50 ms", f"latency-{t}", p50), (f"latency {t}: p99 ms", f"latency-{t}", p99)]
for t in ("ws", "sse", "longpoll"):
    rows += [(f"fan-out {t}: server CPU µs/delivery", f"fanout-{t}", cpu_us),
             (f"fan-out {t}: p50 ms", f"fanout-{t}", p50), (f"fan-out {t}: p99 ms", f"fanout-{t}", p99)]
rows.append(("fan-out search ws: sustained msg/s", "search-ws", lambda r: r["sustained_rate"]))
for t, label in (("ws", "ws listening"), ("ws-registered", "ws registered"), ("sse", "sse"), ("longpoll", "longpoll held")):
    rows.append((f"idle {label}: KiB/connection", f"idle-{t}", lambda r: r["kib_per_connection"]))

def problems(stem, r):
    """What makes a run's figure doubtful: lost, repeated, unconnected."""
    if stem.startswith("search"):
        return []
    bad = []
    if r.get("connected", 0) < r.get("subscribers", 0):
        bad.append(f"{r['subscribers'] - r['connected']} not connected")
    lost = r.get("missing", 0) + r.get("missing_seqs", 0)
    dup = r.get("duplicated", 0) + r.get("duplicated_seqs", 0)
    bad += [f"{lost} missing"] * bool(lost) + [f"{dup} duplicated"] * bool(dup)
    return bad

def fmt(x):
    return "–" if x is None else (f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}")

rounds = sorted({int(m.group(1)) for p in out.glob("*.cmd") if (m := re.search(r"-[AB]-(\d+)$", p.stem))})
print(f"# pushlab A/B: {out.name}\n")
print(f"- BEFORE (A): `{line('before')}`")
print(f"- AFTER (B): `{line('after')}`")
print(f"- rounds: {line('rounds')}; loadavg at start {line('loadavg at start')}, at end {line('loadavg at end')}; {line('elapsed')}\n")
print("| measurement | BEFORE median | AFTER median | AFTER/BEFORE | BEFORE rounds | AFTER rounds |")
print("| --- | ---: | ---: | ---: | --- | --- |")
notes = []
for label, stem, value in rows:
    medians, each = [], []
    for side in "AB":
        vals, shown = [], []
        for n in rounds:
            name = f"{stem}-{side}-{n}"
            path = out / f"{name}.json"
            if not (out / f"{name}.cmd").exists():
                continue
            try:
                r = json.loads(path.read_text())
                v = value(r)
            except (OSError, ValueError, KeyError, TypeError):
                r, v = None, None
            if v is None:
                shown.append("failed")
                continue
            vals.append(v)
            bad = problems(stem, r)
            shown.append(fmt(v) + ("*" if bad else ""))
            if bad:
                notes.append(f"{name}: {', '.join(bad)}")
        medians.append(statistics.median(vals) if vals else None)
        each.append(", ".join(shown) or "–")
    if each == ["–", "–"]:
        continue
    a, b = medians
    ratio = f"{b / a:.2f}×" if a and b is not None else "–"
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} | {each[0]} | {each[1]} |")
skipped = sorted(p.stem for p in out.glob("*.skipped"))
if notes or skipped:
    print()
for note in sorted(set(notes)):
    print(f"- \\* {note}")
for name in skipped:
    print(f"- {name}: {(out / f'{name}.skipped').read_text().strip()}")
PY
step "done: $OUT"
