"""The table of cost.sh's results: server CPU per delivery and its ratios
(median over rounds), and memory per idle connection. Run on a results
folder it prints the table; report.py imports `cost_lines` for the
benchmarks page."""

import json
import pathlib
import re
import statistics
import sys

# (ratio label, numerator run, denominator run, target or None). The last
# two set pushlab's long-poll target beside the floor's: what the least
# long-poll server costs per delivery against pushlab `ws`, and how far
# pushlab's long-poll is above that least.
RATIOS = [
    ("`ws` fan-out: pushlab / floor", "pushlab-ws", "floor-ws", 1.0),
    ("`sse` fan-out / pushlab `ws`", "pushlab-sse", "pushlab-ws", 1.0),
    ("`longpoll` / pushlab `ws`", "pushlab-longpoll", "pushlab-ws", 1.5),
    ("floor `longpoll` / pushlab `ws` (the least a long-poll costs)", "floor-longpoll", "pushlab-ws", None),
    ("`longpoll`: pushlab / floor", "pushlab-longpoll", "floor-longpoll", None),
]
RUNS = [
    ("pushlab-floor `ws`", "floor-ws"),
    ("pushlab `ws`", "pushlab-ws"),
    ("pushlab `sse`", "pushlab-sse"),
    ("pushlab `longpoll`", "pushlab-longpoll"),
    ("pushlab-floor `longpoll`", "floor-longpoll"),
    ("socket.io 4 `websocket` (Node)", "socketio-ws"),
]
# (label, file stem, target in KiB)
IDLE = [
    ("`ws`, registered (a chat client)", "idle-ws-registered", 6.0),
    ("`ws`, registered, taking WebRTC signals (`signals=true`)", "idle-ws-signals", None),
    ("`ws`, listening", "idle-ws", None),
    ("`sse` stream", "idle-sse", None),
    ("`longpoll`, held, anonymous", "idle-longpoll", 10.0),
    ("`wss`, listening (`--tls`)", "idle-tls-ws", None),
    ("`sse` over HTTP/2, one stream per connection (`--tls`)", "idle-tls-sse-h2", None),
    ("WebTransport session (`--webtransport`)", "idle-wt", None),
]


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cpu_us(result):
    """Server CPU per delivery, µs."""
    if not result or result.get("server_cpu_percent") is None or not result.get("deliveries_per_sec"):
        return None
    return result["server_cpu_percent"] / 100 / result["deliveries_per_sec"] * 1e6


def flaws(result):
    """What makes a run's figure doubtful: lost, repeated, unconnected."""
    bad = []
    if result.get("connected", 0) < result.get("subscribers", 0):
        bad.append(f"{result['subscribers'] - result['connected']} not connected")
    lost = result.get("missing", 0) + result.get("missing_seqs", 0)
    dup = result.get("duplicated", 0) + result.get("duplicated_seqs", 0)
    return bad + [f"{lost} missing"] * bool(lost) + [f"{dup} duplicated"] * bool(dup)


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def rounds_in(out):
    return sorted({int(m.group(1)) for p in out.glob("cpu-*.json") if (m := re.search(r"-(\d+)$", p.stem))})


def cpu_lines(out):
    """Markdown lines for the CPU runs in folder `out`: each server's CPU
    per delivery, then the ratios."""
    out = pathlib.Path(out)
    rounds = rounds_in(out)
    if not rounds:
        return []
    lines, per_round = [], {}
    lines += ["| server | rate msg/s | server CPU % (median) | CPU µs/delivery (median) | each round µs | p99 ms (median) |",
              "| --- | ---: | ---: | ---: | --- | ---: |"]
    for label, stem in RUNS:
        results = [load(out / f"cpu-{stem}-{n}.json") for n in rounds]
        per_round[stem] = [cpu_us(r) for r in results]
        good = [r for r in results if r]
        if not good:
            continue
        vals = [v for v in per_round[stem] if v is not None]
        cpu = [r["server_cpu_percent"] for r in good if r.get("server_cpu_percent") is not None]
        p99 = [r["latency"]["p99_ms"] for r in good if r.get("latency")]
        lines.append(
            f"| {label} | {good[0].get('rate', '–')} | {fmt(statistics.median(cpu) if cpu else None, 1)} "
            f"| {fmt(statistics.median(vals) if vals else None)} | {', '.join(fmt(v) for v in per_round[stem])} "
            f"| {fmt(statistics.median(p99) if p99 else None, 1)} |")
    lines += ["", "| ratio of CPU per delivery | median | each round | target |", "| --- | ---: | --- | ---: |"]
    for label, num, den, target in RATIOS:
        each = [a / b if a and b else None for a, b in zip(per_round[num], per_round[den])]
        vals = [v for v in each if v is not None]
        if target is None and not vals:
            # Results from before the floor's long-poll: no row rather than
            # a row of dashes.
            continue
        med = statistics.median(vals) if vals else None
        verdict = "" if med is None or target is None else (" (met)" if med <= target else " (not met)")
        lines.append(f"| {label} | {fmt(med)}×{verdict} | {', '.join(fmt(v) for v in each)} "
                     f"| {'–' if target is None else f'≤ {target}×'} |")
    return lines + notes(out, "cpu-")


def idle_lines(out):
    """Markdown lines for the idle runs in folder `out`."""
    out = pathlib.Path(out)
    idle = [(label, load(out / f"{stem}.json"), target) for label, stem, target in IDLE]
    if not any(r for _, r, _ in idle):
        return []
    lines = ["| idle connection | held | connected | server RSS rise KiB/connection | target |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for label, r, target in idle:
        if not r:
            continue
        kib = r["kib_per_connection"]
        verdict = "" if target is None else (" (met)" if kib <= target else " (not met)")
        lines.append(f"| {label} | {r['subscribers']} | {r['connected']} | {kib:.1f}{verdict} "
                     f"| {'–' if target is None else f'≤ {target:g} KiB'} |")
    return lines + notes(out, "idle-")


def notes(out, prefix):
    """What makes some of the runs doubtful, and the runs that failed."""
    found = []
    for path in sorted(out.glob(f"{prefix}*.json")):
        r = load(path)
        if r and flaws(r):
            found.append(f"- \\* {path.stem}: {', '.join(flaws(r))}")
    for path in sorted(out.glob(f"{prefix}*.skipped")):
        found.append(f"- {path.stem}: {path.read_text().strip()}")
    return [""] + found if found else []


def cost_lines(out):
    """Every table for the results in folder `out`."""
    cpu, idle = cpu_lines(out), idle_lines(out)
    return cpu + ([""] if cpu and idle else []) + idle


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    machine = (out / "machine.txt").read_text()
    print(f"# pushlab cost: {out.name}\n")
    for line in machine.splitlines():
        print(f"- {line}")
    print()
    print("\n".join(cost_lines(out)))
