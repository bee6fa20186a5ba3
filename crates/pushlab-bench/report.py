#!/usr/bin/env python3
"""Writes docs/benchmarks.md, and the measured tables of docs/transports.md,
from one results directory of crates/pushlab-bench/run.sh. Nothing here is measured or
typed in by hand: every figure is read from the JSON the load generator wrote.

    python3 crates/pushlab-bench/report.py target/bench-results/<time>

With --cluster it writes only the section "Behind a round-robin proxy" of
docs/benchmarks.md (between its markers), from a results directory of
crates/pushlab-bench/cluster-compare.sh; a whole page written without it
keeps that section as it was.

    python3 crates/pushlab-bench/report.py --cluster target/bench-results/cluster-<time>

A run of the Redis section alone (`ONLY=redis`) rewrites only that section of
docs/benchmarks.md, between its markers, and leaves the rest of the page and
docs/transports.md as another run wrote them. A run without the Redis section
keeps the one already on the page. The same goes for the cost section
(`ONLY=cost`: "Cost per delivery" and "Idle memory per transport", from
cost.sh's rounds), and for the two together.

The sections written by hand (before-and-after comparisons, rooms) are not
on the page's source: each is a file in docs/benchmarks/, named NN-*.md, and
a whole page includes them all, in the order of their names, after the
generated sections and before the Redis one. Edit them there.
"""
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

from results import CLIENT_LIMIT, Results, failure_reason, ms, num, pct

CLUSTER = sys.argv[1:2] == ["--cluster"]
ARGS = sys.argv[2:] if CLUSTER else sys.argv[1:]
OUT = Path(ARGS[0])
# Earlier results directories, for the repeatability table only.
EARLIER = [] if CLUSTER else [Path(p) for p in ARGS[1:]]
# The workspace root: this file lives in crates/pushlab-bench/.
ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent


RESULTS = Results(OUT)
load = RESULTS.load


def cmd(name):
    return RESULTS.cmd(name) or "(not run)"


def console(names, labelled=False):
    """A console block of the commands saved as NAME.cmd, each under a
    `# NAME` line if labelled."""
    out = ["```console"]
    for name in names:
        out += [f"# {name}"] if labelled else []
        out.append("$ " + cmd(name))
    return out + ["```"]


def hand_written(filename):
    """A text written by hand beside this script, and a blank line, if it is there."""
    path = BENCH / filename
    return [path.read_text().strip(), ""] if path.exists() else []


def why_missing(name):
    return RESULTS.why_missing(name, "no result")


SEARCH_HEADER = [
    "| sustained msg/s | deliveries/s | p50 ms | p99 ms | server CPU | load gen CPU | first failure msg/s | why it failed | server / load gen CPU there | limit |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
]
SEARCH_STEPS_INTRO = (
    "Every step of every search (rate, p50/p99 ms, deliveries/s, missing, server and load-generator CPU). "
    "A step that failed on latency alone was run once more (`again`), and passed if either run did:")


def search_row(label, name):
    """One row of a sustained-rate table (SEARCH_HEADER, after a label
    column) for the search saved as NAME.json."""
    r = load(name)
    if not r:
        return f"| {label} | {why_missing(name)} |||||||||"
    s = r.get("sustained")
    fail = None
    if r.get("first_failure") is not None:
        # With retries a failing rate was run more than once; the last run decided.
        fail = ([st for st in r["steps"] if st["rate"] == r["first_failure"]] or [None])[-1]
    client = (r.get("loadgen_cpu_at_failure") or 0) >= CLIENT_LIMIT
    limit = "–" if fail is None else ("**client** (load generator ≥ 85%)" if client else "server")
    there = f"{pct(r.get('server_cpu_at_failure'))} / {pct(r.get('loadgen_cpu_at_failure'))}"
    if not s:
        return (f"| {label} | none passed | | | | | | {num(r.get('first_failure'))} | "
                f"{failure_reason(fail)} | {there} | {limit} |")
    return (f"| {label} | **{num(r['sustained_rate'])}** | {num(s['deliveries_per_sec'])} | "
            f"{ms(s['latency']['p50_ms'])} | {ms(s['latency']['p99_ms'])} | {pct(s['server_cpu_percent'])} | "
            f"{pct(s['loadgen_cpu_percent'])} | {num(r.get('first_failure'))} | {failure_reason(fail)} | "
            f"{there} | {limit} |")


def search_steps(r):
    """Every step of a search, on one line."""
    parts = []
    for i, st in enumerate(r["steps"]):
        again = i > 0 and r["steps"][i - 1]["rate"] == st["rate"] and not r["steps"][i - 1]["passed"]
        parts.append(
            f"{num(st['rate'])}{' again' if again else ''} → {ms(st['latency']['p50_ms'])}/{ms(st['latency']['p99_ms'])} ms, "
            f"{num(st['deliveries_per_sec'])}/s, missing {st['missing'] + st['missing_seqs']:,}, "
            f"CPU {pct(st['server_cpu_percent'])}/{pct(st['loadgen_cpu_percent'])} "
            f"{'pass' if st['passed'] else 'FAIL'}")
    return "; ".join(parts)


def client_limited(r):
    """The search ended because the load generator, not the server, ran out of CPU."""
    return bool(r) and r.get("first_failure") is not None and (r.get("loadgen_cpu_at_failure") or 0) >= CLIENT_LIMIT


def verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**missed**")


LABELS = {
    "pushlab-ws": "pushlab `ws`",
    "pushlab-sse": "pushlab `sse`",
    "pushlab-longpoll": "pushlab `longpoll`",
    "pushlab-poll": "pushlab `poll`",
    "pushlab-mix": "pushlab mix (ws/sse/longpoll/poll)",
    "floor-ws": "floor (tokio-tungstenite broadcast)",
    "floor-longpoll": "floor long-poll (httparse, keep-alive)",
    "socketio-ws": "socket.io 4 `websocket`",
    "socketio-polling": "socket.io 4 `polling`",
}



def markers(name):
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text, name, block):
    """`text` with the lines `block` between the markers `name:begin` and
    `name:end`, or None when it has no such markers."""
    begin, end = markers(name)
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + "\n".join([begin, ""] + block + ["", end]) + tail


def kept_block(path, name):
    """The lines of `path` from marker `name:begin` to `name:end`, both
    included, or [] when it has none."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else ""
    if begin not in text or end not in text:
        return []
    return (begin + text.split(begin, 1)[1].split(end, 1)[0] + end).splitlines()


# Behind a round-robin proxy (cluster-compare.sh) ------------------------------

CLUSTER_RUNS = [
    ("pushlab-ws", "pushlab", "`ws`", "round-robin"),
    ("pushlab-sse", "pushlab", "`sse`", "round-robin"),
    ("pushlab-longpoll", "pushlab", "`longpoll`", "round-robin"),
    ("pushlab-poll", "pushlab", "`poll`", "round-robin"),
    ("socketio-ws", "socket.io", "`websocket`", "round-robin"),
    ("socketio-polling", "socket.io", "`polling`", "round-robin"),
    ("socketio-polling-ip-hash", "socket.io", "`polling`", "`ip_hash` (sticky)"),
]


def proxied(name):
    """What nginx passed to each node in run `name`, from its access log:
    ({node letter: requests}, Counter of statuses)."""
    nodes_file, log = OUT / f"{name}.nodes", OUT / f"{name}.access.log"
    if not nodes_file.exists() or not log.exists():
        return None, None
    letters = {addr: letter for addr, letter in zip(nodes_file.read_text().split(), "ab")}
    per_node = {letter: 0 for letter in letters.values()}
    statuses = Counter()
    for line in log.read_text().splitlines():
        method, uri, status, upstream = line.split(" ", 3)
        statuses[status] += 1
        # A request nginx tried on both nodes names both.
        for addr in upstream.split(", "):
            if addr in letters:
                per_node[letters[addr]] += 1
    return per_node, statuses


def cell(text):
    return text.replace("|", "\\|")


def cluster_section():
    info = dict(line.split(": ", 1) for line in (OUT / "machine.txt").read_text().splitlines() if ": " in line)
    first = next((load(n) for n, *_ in CLUSTER_RUNS if load(n)), None) or {}
    subs, rate, secs = first.get("subscribers", "?"), first.get("rate", 0), first.get("duration_secs", 0)
    out = ["## Behind a round-robin proxy", ""]
    out.append(f"Written by `crates/pushlab-bench/cluster-compare.sh` from `target/bench-results/{OUT.name}` "
               f"({info.get('date', '?')}, pushlab {info.get('pushlab commit', '?')}).")
    out.append("")
    out.append(f"Two nodes of each server share one Redis {info.get('redis', '')}: pushlab with `--redis`, "
               f"socket.io {info.get('socket.io', '?')} with `@socket.io/redis-streams-adapter` "
               f"{info.get('adapter', '?')}. nginx {info.get('nginx', '?')} is in front, configured by "
               "`scripts/nginx-cluster-conf.sh`: round-robin, no `ip_hash`, no sticky cookie, so every HTTP "
               "request and every WebSocket goes to either node. Each run starts all of it fresh; the nodes, "
               "Redis and nginx run on core 1, the load generator on core 0. "
               f"{subs} subscribers on the transport, and one publisher on a WebSocket sending "
               f"{rate:.0f} messages a second for {secs:.0f} s, through nginx.")
    out.append("")
    out.append("| server | transport | proxy | subscribers connected | delivered / expected | missing | duplicated "
               "| requests nginx passed to node a / b | nginx's answers | why subscribers stopped |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, server, transport, proxy in CLUSTER_RUNS:
        r = load(name)
        if r is None:
            out.append(f"| {server} | {transport} | {proxy} | {cell(why_missing(name))} | | | | | | |")
            continue
        expected = r["published"] * r["subscribers"]
        per_node, statuses = proxied(name)
        nodes = " / ".join(f"{per_node[k]:,}" for k in sorted(per_node)) if per_node else "–"
        answers = ", ".join(f"{s} ×{n:,}" for s, n in sorted(statuses.items())) if statuses else "–"
        errors = "; ".join(f"{e['subscribers']} × {e['error']}" for e in r.get("errors", [])) or "none"
        out.append(f"| {server} | {transport} | {proxy} | {r['connected']} of {r['subscribers']} "
                   f"| {r['deliveries']:,} / {expected:,} | {r['missing']:,} | {r['duplicated']:,} "
                   f"| {nodes} | {answers} | {cell(errors)} |")
    out.append("")
    out.append("- *missing* counts, per subscriber, every message it never received, so a subscriber that "
               "never connected misses them all; *duplicated* counts second copies. *nginx's answers* are "
               "the statuses nginx logged for every request it passed on (101 for each WebSocket, 499 for a "
               "request the client gave up on), the load generator's own included: its publisher's "
               "WebSocket, and for pushlab one `GET /stats` for the log's head. *Why subscribers stopped* is each distinct reason, with the "
               "status and body the load generator got.")
    out.append("- socket.io's `polling` keeps each engine.io session (its `sid`) in the memory of the node "
               "that answered the handshake; the adapter shares broadcasts between nodes, not sessions. A "
               "later request with that `sid` that nginx sends to the other node is refused with HTTP 400 "
               "`{\"code\":1,\"message\":\"Session ID unknown\"}`, and the subscriber is gone. socket.io "
               "documents sticky sessions as required whenever polling is on. Its `websocket` transport is "
               "one connection, so one node, and the adapter carries the publisher's messages to the other.")
    out.append("- The `ip_hash` control keys on the first three octets of an IPv4 address, and every load "
               "client here comes from 127.0.0.x, so all of them went to one node: it shows that socket.io "
               "polling works when it is sticky, not that the load was spread.")
    out.append("- pushlab keeps no session for a reader: a cursor is a seq in the room's Redis stream, with "
               "the epoch Redis holds, so any node answers any read. The load generator's readers are "
               "anonymous and its publisher registers and sends over its WebSocket, one connection to one "
               "node. A browser on an HTTP transport registers with `POST /register` and sends with "
               "`POST /send?session=…`, and through a round-robin those reach other nodes than the one that "
               "registered it: that needs presence shared across nodes through Redis (see "
               "[scaling.md](scaling.md)); `tests/e2e/cluster.test.mjs` runs the browser client through "
               "this nginx on every transport.")
    out.append("")
    out.append("```console")
    out.append("$ crates/pushlab-bench/cluster-compare.sh   # about a minute after the build; writes this section")
    for name, *_ in CLUSTER_RUNS:
        out.append("$ " + cmd(name).replace("target/release/", "") + "   # " + name)
    out.append("```")
    return out


if CLUSTER:
    page = ROOT / "docs" / "benchmarks.md"
    text = page.read_text()
    section = cluster_section()
    updated = replace_block(text, "cluster", section)
    if updated is None:
        begin, end = markers("cluster")
        updated = text.rstrip("\n") + "\n\n" + "\n".join([begin, ""] + section + ["", end]) + "\n"
    page.write_text(updated)
    print("wrote the round-robin section of docs/benchmarks.md")
    sys.exit(0)

machine = (OUT / "machine.txt").read_text() if (OUT / "machine.txt").exists() else ""
quick = "quick: 1" in machine
# The sections run.sh ran; a run from before it recorded them ran these.
ran = re.search(r"^sections: (\S+)", machine, flags=re.M)
RAN = set(ran.group(1).split(",")) if ran else {"latency", "wire", "fanout", "idle", "profile", "criterion"}
PAGE = ROOT / "docs" / "benchmarks.md"
REDIS_BEGIN, REDIS_END = markers("redis")
COST_BEGIN, COST_END = markers("cost")
# The sections written by hand, one file each, included in name order.
FRAGMENTS = ROOT / "docs" / "benchmarks"


def fragments():
    """Every hand-written section, each followed by a blank line."""
    out = []
    for path in sorted(FRAGMENTS.glob("[0-9]*.md")):
        out += [path.read_text().strip(), ""]
    return out


def cost_table():
    """cost-table.py, which cost.sh prints its table with."""
    spec = importlib.util.spec_from_file_location("cost_table", BENCH / "cost-table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cost_section():
    """The cost block: CPU per delivery at fixed loads and its ratios, and
    the memory of each kind of idle connection, from cost.sh's results in
    OUT/cost."""
    results = OUT / "cost"
    table = cost_table()
    info = (results / "machine.txt").read_text() if (results / "machine.txt").exists() else ""
    out = [COST_BEGIN, "", "## Cost per delivery", ""]
    o = out.append
    o("Written by `crates/pushlab-bench/report.py` from the results of "
      "`crates/pushlab-bench/cost.sh` (which run.sh's `cost` section runs; `ONLY=cost` runs it "
      "alone and rewrites only this block) in "
      f"`{results.resolve().relative_to(ROOT) if results.resolve().is_relative_to(ROOT) else results.resolve()}`: "
      f"pushlab commit {machine_line('commit', info)}, load average {machine_line('loadavg at start', info)} "
      f"at the start and {machine_line('loadavg at end', info)} at the end "
      f"({machine_line('nproc', info)} cores).")
    o("")
    try:
        busy = float(machine_line("loadavg at start", info).split()[0]) > float(machine_line("nproc", info))
    except ValueError:
        busy = False
    if busy:
        o("> **Measured on a busy machine:** other work kept the load average above the number "
          "of cores, so the absolute figures are high and the ratios noisier than they would be "
          "on a quiet machine. Run the command below there to measure again.")
        o("")
    o("What decides how many subscribers one node holds is the server's CPU per delivery "
      "and its memory per idle connection, and both can be measured at loads that saturate "
      "neither the server nor the load generator. Each server runs alone on core 1 "
      "(`--workers 1`), pushlab-load on core 0; 1000 subscribers, 8 s of publishing, "
      "`ws` and `sse` at 50 msg/s, `longpoll` at 20 msg/s. "
      "pushlab-floor is the least a server can do on each of two transports: a WebSocket "
      "broadcast (tokio-tungstenite, one broadcast channel), and HTTP/1.1 keep-alive "
      "long-polls answered from a bounded log in pushlab's JSON shape (httparse, one write per "
      "answer), at 20 msg/s; its long-poll ratios show how much of pushlab's long-poll cost is "
      "the transport's own (each delivery is a request read and an answer written). "
      "CPU per delivery is the server's CPU time over the publishing window divided by the "
      "deliveries. A round runs every server once, each on a fresh process, in reverse order "
      "every other round; each ratio is taken within a round, and the figure is the median "
      "over the rounds, because on a shared machine single pairs move by ±30%.")
    o("")
    cpu = table.cpu_lines(results)
    out.extend(cpu or [f"(no CPU rounds in this run: {why_missing('cost')})"])
    o("")
    o("The socket.io peer runs with `bufferutil` and `utf-8-validate` installed, as "
      "socket.io's performance guide says (crates/pushlab-bench/socketio/package.json); it is "
      "shown at the same load and is in no ratio.")
    o("")
    o("## Idle memory per transport")
    o("")
    o("The server's resident memory rise per connection, connections held 20 s, read after "
      "jemalloc's purge has had its second. A registered WebSocket has a session of its own "
      "and got every other one's join, as a chat client does; a held long-poll names no session.")
    o("")
    idle = table.idle_lines(results)
    out.extend(idle or ["(no idle runs in this run)"])
    o("")
    o("A socket taking WebRTC signals (`/ws?signals=true`, registered over the socket) is what "
      "the page's WebRTC transport keeps beside its peers. `wss` and SSE over HTTP/2 come from "
      "a server under `--tls`, each connection with its TLS session; WebTransport sessions "
      "from one under `--webtransport`, each a QUIC connection with its session stream.")
    o("")
    o("```console")
    o("$ crates/pushlab-bench/cost.sh     # about 9 minutes after the build; prints these tables")
    o("```")
    o("")
    o("Each run's server and load commands, as run (the first round's; the others repeat them):")
    o("")
    o("```console")
    for path in sorted(results.glob("*.cmd")):
        if re.search(r"-\d+$", path.stem) and not path.stem.endswith("-1"):
            continue
        o(f"# {re.sub(r'-1$', '', path.stem)}")
        for command in path.read_text().strip().splitlines():
            o("$ " + re.sub(r"\S*/(release|before)/", "target/release/", command))
    o("```")
    o("")
    o(COST_END)
    return out


def machine_line(key, text=machine):
    m = re.search(rf"^{key}: (.*)$", text, flags=re.M)
    return m.group(1).strip() if m else "?"


def us_per_delivery(r, cpu):
    """CPU µs per delivery: CPU (percent of a core) over the run's deliveries per second."""
    if cpu is None or not r["deliveries_per_sec"]:
        return None
    return cpu / 100 / r["deliveries_per_sec"] * 1e6


def process_cpu(r, command):
    """The CPU of the run's server-side processes named COMMAND, summed."""
    each = [p["cpu_percent"] for p in r.get("server_processes", []) if p["command"] == command]
    return None if not each or None in each else sum(each)


def p50_p99(r):
    return "–" if not r else f"{ms(r['latency']['p50_ms'])} / {ms(r['latency']['p99_ms'])}"


def lost_and_repeated(r):
    return r["missing"] + r["missing_seqs"], r["duplicated"] + r["duplicated_seqs"]


def runs_named(pattern):
    """What PATTERN's group matches in the names of this run's commands, in
    order: the publisher counts of the searches, say. A number where it is one."""
    found = {m.group(1) for f in OUT.glob("*.cmd") if (m := re.fullmatch(pattern, f.stem))}
    return sorted(int(x) if x.isdigit() else x for x in found)


def publishers(n):
    return f"{n} publisher{'s' * (n != 1)}"


def redis_section():
    """The "Scale-out on Redis" section, between its markers."""
    out = [REDIS_BEGIN, "", "## Scale-out on Redis", ""]
    o = out.append
    rel = OUT.relative_to(ROOT) if OUT.is_absolute() else OUT
    redis_version = re.sub(r".*v=(\S+).*", r"\1", machine_line("redis-server"))
    o(f"Written by `crates/pushlab-bench/run.sh` (its `redis` section; `ONLY=redis` runs it alone and "
      f"rewrites only this section) from the results in `{rel}`, which may be another run than the rest "
      f"of this page: pushlab commit {machine_line('pushlab commit')}, "
      f"redis-server {redis_version}, load average "
      f"{machine_line('loadavg at start')} at the start and {machine_line('loadavg at end')} at the end "
      f"({machine_line('nproc')} cores).")
    if quick:
        o("")
        o("> **This section comes from a QUICK smoke run** (small counts, short steps). "
          "Its figures only show that the machinery works.")
    o("")
    o("Method, beyond the page's:")
    o("")
    o("- *The server side is a node and its Redis.* A pushlab node (`--workers 1 --rate-limit 0`) "
      "with `--redis` uses a redis-server of its own: Debian's, on a free port, with no RDB snapshots "
      "and no AOF, in a temporary folder, a fresh one for each measurement. Both are pinned to core 1, "
      "so Redis's work comes out of the same core as the node's (the in-memory node has that core to "
      "itself); the load generator keeps core 0.")
    o("- *Server CPU is the node's and Redis's together*: `--server-pid` names both, the load "
      "generator reads each from `/proc/PID/stat` over the publishing window and adds them. "
      "CPU per delivery is that sum over deliveries per second; the node's and Redis's shares are "
      "given apart.")
    o("- *Across nodes*: two nodes on one Redis, A and B, and the Redis, all three on core 1. The "
      "subscribers read B; the publisher sends to A (`--publish-url`), or to B for \"same node\", "
      "with A still running and mirroring the room, so the same three processes share the core "
      "in both. On Redis every delivery goes through Redis and B's blocking `XREAD`, wherever it "
      "was published; what crossing adds is that another process runs the append. \"In memory\" "
      "is one node without Redis, the same load. A third core for node A would have to be the load "
      "generator's.")
    o("")

    # One node ---------------------------------------------------------------
    stores = (("memory", "in memory"), ("redis", "Redis"))
    search = {(store, p): load(f"redis-{store}-ws-search-p{p}")
              for p in runs_named(r"redis-memory-ws-search-p(\d+)") for store, _ in stores}
    subscribers = next((r["sustained"]["subscribers"] for r in search.values() if r and r.get("sustained")), "N")
    o(f"### One node: the Redis hop, `ws` fan-out to {subscribers} subscribers")
    o("")
    o("The highest sustained rate, searched as in the fan-out section (p99 ≤ 50 ms, nothing "
      "missing or duplicated, every subscriber connected), with one publisher as there and with "
      "several sharing the rate:")
    o("")
    o("| log, publishers " + SEARCH_HEADER[0])
    o("| --- " + SEARCH_HEADER[1])
    for (store, p) in search:
        o(search_row(f"{dict(stores)[store]}, {publishers(p)}", f"redis-{store}-ws-search-p{p}"))
    o("")
    o(SEARCH_STEPS_INTRO)
    o("")
    for (store, p), r in search.items():
        if r:
            o(f"- {dict(stores)[store]}, {publishers(p)}: " + search_steps(r))
    o("")
    o("At fixed rates: 50 msg/s from one publisher, where neither setup fills its core and CPU "
      "per delivery is a cost, and 200 msg/s from several, nearer the core's limit, for latency.")
    o("")
    o("| log | transport | msg/s | publishers | deliveries/s | p50 ms | p99 ms | p99.9 ms | server CPU (node + Redis) | "
      "CPU per delivery: node | Redis | together | missing | duplicated | load gen CPU |")
    o("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fixed = {}
    fixed_runs = runs_named(r"redis-memory-((ws|sse)-\d+-p\d+)")
    for run in sorted(fixed_runs, key=lambda run: (not run.startswith("ws-"), int(run.split("-")[1]))):
        transport, rate, p = run.split("-")
        for store, label in stores:
            name = f"redis-{store}-{run}"
            r = fixed[(store, run)] = load(name)
            if not r:
                o(f"| {label} | `{transport}` | {rate} | {p[1:]} | {why_missing(name)} |||||||||||")
                continue
            l = r["latency"]
            node, red = process_cpu(r, "pushlab"), process_cpu(r, "redis-server")
            lost, dup = lost_and_repeated(r)
            per = [us_per_delivery(r, c) for c in (node, red, r["server_cpu_percent"])]
            o(f"| {label} | `{transport}` | {num(r['rate'])} | {r['publishers']} | {num(r['deliveries_per_sec'])} | "
              f"{ms(l['p50_ms'])} | {ms(l['p99_ms'])} | {ms(l['p999_ms'])} | {pct(r['server_cpu_percent'])} | "
              + " | ".join("–" if u is None else f"{u:.1f} µs" for u in per)
              + f" | {lost} | {dup} | {pct(r['loadgen_cpu_percent'])} |")
    o("")

    # Across nodes -----------------------------------------------------------
    o("### Across nodes: publish on A, subscribe on B")
    o("")
    o("`ws` subscribers, 100 msg/s. Latency p50 / p99 in ms, and the server side's CPU "
      "(one node; or A + B + Redis):")
    o("")
    o("| subscribers | in memory, one node | Redis, same node (B → B) | Redis, across nodes (A → B) | "
      "across − same, p50 | across − in memory, p50 | CPU: in memory | same node | across |")
    o("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    nodes = {}
    for n in runs_named(r"redis-nodes-memory-(\d+)"):
        got = {where: load(f"redis-nodes-{where}-{n}") for where in ("memory", "same", "cross")}
        nodes[n] = got

        def added(a, b):
            if not got[a] or not got[b]:
                return "–"
            return f"{got[a]['latency']['p50_ms'] - got[b]['latency']['p50_ms']:+.3f} ms"
        o(f"| {n:,} | {p50_p99(got['memory'])} | {p50_p99(got['same'])} | {p50_p99(got['cross'])} | "
          f"{added('cross', 'same')} | {added('cross', 'memory')} | "
          + " | ".join(pct(got[k]["server_cpu_percent"]) if got[k] else why_missing(f"redis-nodes-{k}-{n}")
                       for k in ("memory", "same", "cross")) + " |")
    o("")

    # Targets ------------------------------------------------------------------
    o("### Targets")
    o("")
    o("| target | measured | ratio or difference | met? |")
    o("| --- | --- | ---: | --- |")
    for p in runs_named(r"redis-memory-ws-search-p(\d+)"):
        mem, red = search[("memory", p)], search[("redis", p)]
        text = f"one node on Redis sustains ≥ 0.7× the in-memory `ws` fan-out rate to {subscribers}, {publishers(p)}"
        if not (mem and red and mem.get("sustained_rate")):
            o(f"| {text} | a search did not run, or the in-memory one passed nothing | | – |")
            continue
        ratio = red["sustained_rate"] / mem["sustained_rate"]
        # Where the load generator neared its core too, a rate is a lower
        # bound; its CPU at each first failure says how near.
        near = [f"{label} {pct(r.get('loadgen_cpu_at_failure'))}"
                for label, r in (("Redis", red), ("in memory", mem)) if client_limited(r)]
        note = f" (load generator at the first failure: {', '.join(near)})" if near else ""
        o(f"| {text} | {num(red['sustained_rate'])} vs {num(mem['sustained_rate'])} msg/s{note} | "
          f"{ratio:.2f}× | {verdict(ratio >= 0.7)} |")
    for n, got in nodes.items():
        for base, text in (("same", "against the same node on Redis (the target)"),
                           ("memory", "against one node in memory (the stricter reading)")):
            a, b = got["cross"], got[base]
            if not a or not b:
                o(f"| across nodes adds ≤ 2 ms to p50, {n:,} subscriber{'s' * (n != 1)}, {text} | did not run | | – |")
                continue
            d = a["latency"]["p50_ms"] - b["latency"]["p50_ms"]
            o(f"| across nodes adds ≤ 2 ms to p50, {n:,} subscriber{'s' * (n != 1)}, {text} | "
              f"{ms(a['latency']['p50_ms'])} vs {ms(b['latency']['p50_ms'])} ms | {d:+.3f} ms | {verdict(d <= 2.0)} |")
    runs = [r for r in fixed.values() if r] + [r for got in nodes.values() for r in got.values() if r]
    runs += [st for r in search.values() if r for st in r["steps"] if st.get("passed")]
    bad = [f"{r['target']}/{r['transport']} at {num(r['rate'])} msg/s" for r in runs if any(lost_and_repeated(r))]
    o(f"| every run: 0 missing, 0 duplicated | {len(runs)} runs checked (the fixed-rate runs and every "
      f"passing search step); {'none lost or repeated' if not bad else 'lost or repeated in ' + '; '.join(bad)} "
      f"| | {verdict(not bad)} |")
    o("")
    o("Commands, in the order run (`$URL` and `$PID` are the fresh node's, `$REDIS_PID` its "
      "Redis's; `$URL_A`, `$URL_B`, `$PID_A`, `$PID_B` the two nodes'):")
    o("")
    out.extend(console([f.stem for f in sorted(OUT.glob("redis-*.cmd"), key=lambda f: f.stat().st_mtime)],
                       labelled=True))
    o("")
    out.extend(hand_written("analysis-redis.md"))
    o(REDIS_END)
    return out


def redis_block_on_page():
    """The Redis section as the page has it now, if it has one."""
    text = PAGE.read_text() if PAGE.exists() else ""
    if REDIS_BEGIN not in text or REDIS_END not in text:
        return None
    return REDIS_BEGIN + text.split(REDIS_BEGIN, 1)[1].split(REDIS_END, 1)[0] + REDIS_END


def put_block(text, begin, end, block, before):
    """`text` with `block` in place of the one between `begin` and `end`,
    or, without one, before the first of the headings `before` it has."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    for heading in before:
        if "\n" + heading in text:
            head, tail = text.split("\n" + heading, 1)
            return head + "\n" + block + "\n\n" + heading + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"


if not RAN - {"redis", "cost"}:
    # These sections alone: the rest of the page is another run's, and
    # stays as it is. A page without one gets it where a whole run puts it.
    text = PAGE.read_text()
    if "cost" in RAN:
        headings = [part.splitlines()[0] for part in fragments() if part]
        text = put_block(text, COST_BEGIN, COST_END, "\n".join(cost_section()),
                         headings + ["<!-- redis:begin -->", "## Criterion benches"])
    if "redis" in RAN:
        text = put_block(text, REDIS_BEGIN, REDIS_END, "\n".join(redis_section()),
                         ["## Criterion benches"])
    PAGE.write_text(text)
    print("wrote the " + " and ".join(sorted(RAN)) + " section(s) of docs/benchmarks.md")
    sys.exit(0)

lines = []
w = lines.append

w("# pushlab benchmarks")
w("")
w("Written by `crates/pushlab-bench/run.sh` from the results in "
  f"`{OUT.relative_to(ROOT) if OUT.is_absolute() else OUT}`; every figure below comes from that run, "
  "but for a section that names its own. Rerun the whole matrix with one command:")
w("")
w("```console")
w("$ crates/pushlab-bench/run.sh            # about 35 minutes, capped at 45; writes this page")
w("$ QUICK=1 crates/pushlab-bench/run.sh    # a smoke run with small counts")
w("$ ONLY=redis crates/pushlab-bench/run.sh # the Redis section alone; rewrites only that section")
w("$ ONLY=cost crates/pushlab-bench/run.sh  # cost per delivery and idle memory alone; rewrites only those")
w("```")
if EARLIER:
    w("")
    w("This page was then rendered again from the same results, with an earlier run's "
      "for the repeatability table: `python3 crates/pushlab-bench/report.py "
      + " ".join(str(d.relative_to(ROOT) if d.is_absolute() else d) for d in [OUT] + EARLIER) + "`.")
if quick:
    w("")
    w("> **This page comes from a QUICK smoke run** (small counts, short steps). "
      "Its figures only show that the machinery works.")
w("")
w("## Method")
w("")
w("- Every server gets one core: it runs under `taskset -c 1` (pushlab with "
  "`--workers 1 --rate-limit 0`, the floor on a one-thread runtime, socket.io on "
  "Node, which is one thread anyway). The load generator, `pushlab-load`, runs "
  "under `taskset -c 0`. Each measurement starts a fresh server.")
w("- The socket.io peer runs as socket.io's performance guide says to run it: with "
  "`ws`'s native add-ons `bufferutil` and `utf-8-validate` installed from its lockfile "
  "(`crates/pushlab-bench/socketio`), which it requires at start.")
w("- Ordinary scheduling, not real-time: under `chrt`, the kernel's RT throttling "
  "(950 ms of every second) freezes a process that nears 95% of its core for up to "
  "50 ms, and a saturated fan-out step does; earlier runs of this script under "
  "`chrt -r 10` measured those freezes (a p99 of 50–60 ms for every server once it "
  "saturated) rather than the servers. The `scheduling` line below says how this "
  "run was made.")
w("- The load generator runs its publishers on a thread of their own, at a higher "
  "priority than the thread that reads the subscribers' sockets, so a message "
  "goes out on schedule even while a thousand sockets are being read; the "
  "publishers' worst lateness is in the JSON results.")
w("- Open loop: publishers send at a fixed aggregate rate and put each message's "
  "*scheduled* send time (µs on the load generator's clock) and its index in the "
  "payload. Latency is from that schedule to the moment a subscriber has parsed "
  "the message, so a stall anywhere is counted rather than hidden by a slower "
  "send rate (coordinated omission). Percentiles come from HdrHistogram.")
w("- Publishers always use a WebSocket (pushlab `/ws` with a registered session, "
  "the floor, socket.io's `websocket` transport); the subscribers' transport is "
  "what varies. Every publisher also receives the fan-out and reads it.")
w("- Every server delivers the same message. pushlab turns a chat message into an "
  "event of about 97 bytes (`seq`, `ts`, `type`, `name`, `text`, `id`); the floor "
  "and socket.io relay what they are sent, so they are sent an object with the same "
  "fields and size. Every subscriber then reads and checks the same bytes, and the "
  "servers are compared on equal work.")
w("- Missing and duplicated messages are checked per subscriber, by payload index "
  "and, for pushlab, by log `seq` (every seq must be exactly one more than the "
  "last). A message not delivered within 3 s after publishing ends counts as missing.")
w("- Bytes are counted on the load generator's own sockets (a counting "
  "`AsyncRead`/`AsyncWrite` under the HTTP/1.1 client and tokio-tungstenite): HTTP headers, "
  "chunking, JSON envelopes and WebSocket frame headers and masks included. "
  "The load generator sends minimal requests (a `Host` header, plus "
  "`Content-Type` on a POST), so HTTP figures are a floor: a browser adds "
  "hundreds of bytes of headers (User-Agent, Accept, cookies) to every request.")
w("- Server CPU is from `/proc/PID/stat` over the publishing window, RSS from "
  "`/proc/PID/status`. The load generator's own CPU is reported beside it: near "
  "100% means the client, not the server, was the limit.")
w("- Sustained rate: after a 3 s warm-up step at the start rate (reported in the "
  "JSON, not judged), doubling from the start rate, then bisecting between the last "
  "pass and the first failure; a step passes when p99 ≤ 50 ms, no message is "
  "missing or duplicated and every subscriber stayed connected. A step that fails on "
  "latency alone is run once more and passes if that run does, so one "
  "garbage-collection pause or scheduling hiccup in five seconds does not decide a "
  "server's rate; both runs are listed. Each step connects its subscribers afresh "
  "and waits for the server to go idle before publishing.")
w("- Nothing else is meant to run during a run, but the machine is a VM on a shared "
  "host. The load average at the start and the end is recorded below; treat "
  "small differences between runs accordingly.")
w("- Before and after a change: `crates/pushlab-bench/ab.sh BEFORE_BIN AFTER_BIN` "
  "measures two pushlab builds with this page's methods (latency at 100 msg/s on "
  "each transport; fan-out to 1000 subscribers at a fixed rate neither saturates, "
  "ws and sse 50 msg/s, longpoll 20, for server CPU µs per delivery and p50/p99; "
  "idle RSS per connection; `SEARCH=1` adds the ws fan-out search), `ROUNDS` times "
  "(3) taking turns, a fresh server each run. It writes its JSON, commands and "
  "`summary.md` (medians, each round, AFTER/BEFORE) to `target/ab/<time>/` and "
  "leaves this page alone; about 13 minutes.")
w("")
w("## Machine and versions")
w("")
w("```text")
w(machine.strip())
w("```")
w("")

# Latency ------------------------------------------------------------------
w("## Latency: one subscriber, 100 msg/s")
w("")
w("| server / transport | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | missing | duplicated | server CPU | load gen CPU |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
latency = {}
for key in ["pushlab-ws", "pushlab-sse", "pushlab-longpoll", "pushlab-poll",
            "floor-ws", "socketio-ws", "socketio-polling"]:
    r = load(f"latency-{key}")
    latency[key] = r
    label = LABELS[key] + (" (every 50 ms)" if key == "pushlab-poll" else "")
    if not r:
        w(f"| {label} | {why_missing('latency-' + key)} |||||||||")
        continue
    l = r["latency"]
    w(f"| {label} | {ms(l['p50_ms'])} | {ms(l['p90_ms'])} | {ms(l['p99_ms'])} | "
      f"{ms(l['p999_ms'])} | {ms(l['max_ms'])} | {r['missing'] + r['missing_seqs']} | "
      f"{r['duplicated'] + r['duplicated_seqs']} | {pct(r['server_cpu_percent'])} | "
      f"{pct(r['loadgen_cpu_percent'])} |")
poll = latency.get("pushlab-poll")
if poll and poll.get("poll_rtt"):
    w("")
    w(f"Short polling every 50 ms is expected to add half the interval, 25 ms, to "
      f"one round trip; the measured mean is {ms(poll['latency']['mean_ms'])} ms, and "
      f"an empty poll's round trip is {ms(poll['poll_rtt']['p50_ms'])} ms at p50.")
w("")
w("Commands (`$URL` and `$PID` are the fresh server's):")
w("")
w("```console")
for key in latency:
    w("$ " + cmd(f"latency-{key}"))
w("```")
w("")

# Fan-out -------------------------------------------------------------------
w(f"## Fan-out: highest sustained publish rate to {load('fanout-pushlab-ws')['sustained']['subscribers'] if load('fanout-pushlab-ws') and load('fanout-pushlab-ws').get('sustained') else 'N'} subscribers")
w("")
w("| server / transport " + SEARCH_HEADER[0])
w("| --- " + SEARCH_HEADER[1])
fanout = {}
for key in ["pushlab-ws", "floor-ws", "pushlab-sse", "pushlab-longpoll",
            "socketio-ws", "socketio-polling"]:
    fanout[key] = load(f"fanout-{key}")
    w(search_row(LABELS[key], f"fanout-{key}"))
w("")
w(SEARCH_STEPS_INTRO)
w("")
for key, r in fanout.items():
    if r:
        w(f"- {LABELS[key]}: " + search_steps(r))
mix = load("fanout-pushlab-mix")
if mix:
    l = mix["latency"]
    w("")
    w(f"A mixed crowd ({mix['subscribers']:,} subscribers taking ws, sse, longpoll and poll "
      f"every {mix['poll_interval_ms']} ms in turn) at {num(mix['rate'])} msg/s: p50 {ms(l['p50_ms'])} ms, "
      f"p99 {ms(l['p99_ms'])} ms (the poll quarter sets the tail), {num(mix['deliveries_per_sec'])} deliveries/s, "
      f"missing {mix['missing'] + mix['missing_seqs']}, duplicated {mix['duplicated'] + mix['duplicated_seqs']}, "
      f"server CPU {pct(mix['server_cpu_percent'])}.")
w("")
w("```console")
for key in list(fanout) + ["pushlab-mix"]:
    w("$ " + cmd(f"fanout-{key}"))
w("```")
w("")

if EARLIER:
    w("### Repeatability: the same searches in other runs of `crates/pushlab-bench/run.sh`")
    w("")
    w("Sustained rates move from run to run on this VM; compare ratios within one run "
      "rather than figures across runs. The older runs listed here also differ in method "
      "and in pushlab's code (their commits are given; \"Reading the results\" below says "
      "what changed and why).")
    w("")
    keys = ["pushlab-ws", "floor-ws", "pushlab-sse", "pushlab-longpoll", "socketio-ws", "socketio-polling"]
    w("| run | commit | load average at start | warm-up step | " + " | ".join(LABELS[k] for k in keys) + " |")
    w("| --- | --- | --- | --- | " + " | ".join("---:" for _ in keys) + " |")
    for d in [OUT] + EARLIER:
        info = (d / "machine.txt").read_text() if (d / "machine.txt").exists() else ""
        commit = re.search(r"pushlab commit: (\S+)", info)
        loadavg = re.search(r"loadavg at start: (\S+)", info)
        cells = []
        try:
            warm = "yes" if "warmup" in json.loads((d / "fanout-pushlab-ws.json").read_text()) else "no"
        except (OSError, ValueError):
            warm = "?"
        for k in keys:
            try:
                cells.append(num(json.loads((d / f"fanout-{k}.json").read_text())["sustained_rate"]))
            except (OSError, ValueError, KeyError):
                cells.append("–")
        w(f"| `{d.name}`{' (this page)' if d == OUT else ''} | {commit.group(1) if commit else '?'} | "
          f"{loadavg.group(1) if loadavg else '?'} | {warm} | " + " | ".join(cells) + " |")
    w("")
    w("And the one-subscriber latency (100 msg/s, 10 s), p50 / p99 ms:")
    w("")
    lkeys = ["pushlab-ws", "pushlab-sse", "pushlab-longpoll", "floor-ws", "socketio-ws", "socketio-polling"]
    w("| run | " + " | ".join(LABELS[k] for k in lkeys) + " | `ws` p50 / floor p50 |")
    w("| --- | " + " | ".join("---:" for _ in lkeys) + " | ---: |")
    for d in [OUT] + EARLIER:
        cells, got = [], {}
        for k in lkeys:
            try:
                l = json.loads((d / f"latency-{k}.json").read_text())["latency"]
                got[k] = l
                cells.append(f"{ms(l['p50_ms'])} / {ms(l['p99_ms'])}")
            except (OSError, ValueError, KeyError):
                cells.append("–")
        ratio = (f"{got['pushlab-ws']['p50_ms'] / got['floor-ws']['p50_ms']:.2f}×"
                 if "pushlab-ws" in got and "floor-ws" in got else "–")
        w(f"| `{d.name}` | " + " | ".join(cells) + f" | {ratio} |")
    w("")

# Memory --------------------------------------------------------------------
w("## Memory: idle connections")
w("")
w("| server / transport | connections | server RSS before KiB | after KiB | KiB per connection | open per /stats |")
w("| --- | ---: | ---: | ---: | ---: | ---: |")
idle = {}
for key in ["pushlab-ws", "pushlab-sse", "pushlab-longpoll", "floor-ws",
            "socketio-ws", "socketio-polling"]:
    r = load(f"idle-{key}")
    idle[key] = r
    if not r:
        w(f"| {LABELS[key]} | {why_missing('idle-' + key)} |||||")
        continue
    w(f"| {LABELS[key]} | {r['connected']:,} of {r['subscribers']:,} | {r['rss_before_kib']:,} | "
      f"{r['rss_after_kib']:,} | **{r['kib_per_connection']:.1f}** | "
      f"{'–' if r['server_open'] is None else format(r['server_open'], ',')} |")
w("")
w("```console")
for key in idle:
    w("$ " + cmd(f"idle-{key}"))
w("```")
w("")

# Wire ----------------------------------------------------------------------
wire = {}
for key in ["pushlab-ws", "pushlab-sse", "pushlab-longpoll", "pushlab-poll",
            "socketio-ws", "socketio-polling"]:
    for rate in (1, 30):
        wire[(key, rate)] = load(f"wire-{key}-{rate}")


def wire_table():
    out = []
    out.append("| transport | events/s | latency p50 / p99 ms | requests per event | bytes in per event | of which event JSON | headers and framing | bytes out per event |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (key, rate), r in wire.items():
        label = LABELS[key] + (" (every 1 s)" if key == "pushlab-poll" else "")
        if not r:
            out.append(f"| {label} | {rate} | {why_missing(f'wire-{key}-{rate}')} ||||||")
            continue
        l = r["latency"]
        framing = r["wire_received_per_delivery"] - r["payload_per_delivery"]
        out.append(
            f"| {label} | {rate} | {ms(l['p50_ms'])} / {ms(l['p99_ms'])} | {r['requests_per_delivery']:.2f} | "
            f"{r['wire_received_per_delivery']:.0f} | {r['payload_per_delivery']:.0f} | {framing:.0f} | "
            f"{r['wire_sent_per_delivery']:.0f} |")
    out.append("")
    out.append("Requests per event count HTTP requests the subscriber made (a WebSocket or "
               "SSE connection is one, made before the measurement window). Bytes are per "
               "delivered event over the measurement window on the subscriber's socket; "
               "\"event JSON\" is the event as the application sees it (pushlab's event "
               "carries seq, ts, type, name, text and id; the peers relay an object with "
               "the same fields and of the same size, so the payloads match and the "
               "framing is what differs).")
    out.append("")
    out.append("```console")
    for (key, rate) in wire:
        out.append("$ " + cmd(f"wire-{key}-{rate}"))
    out.append("```")
    return out


w("## Bytes and requests per event, one subscriber")
w("")
lines.extend(wire_table())
w("")

# Targets -------------------------------------------------------------------
w("## Targets")
w("")
w("| target | measured | ratio | met? |")
w("| --- | --- | ---: | --- |")


def sustained(key):
    r = fanout.get(key)
    return None if not r else r.get("sustained_rate")


lw, lf = latency.get("pushlab-ws"), latency.get("floor-ws")
if lw and lf:
    r50 = lw["latency"]["p50_ms"] / lf["latency"]["p50_ms"]
    r99 = lw["latency"]["p99_ms"] / lf["latency"]["p99_ms"]
    w(f"| `ws` p50 ≤ 1.3× the floor's (1 subscriber, 100 msg/s) | {ms(lw['latency']['p50_ms'])} vs {ms(lf['latency']['p50_ms'])} ms | {r50:.2f}× | {verdict(r50 <= 1.3)} |")
    w(f"| `ws` p99 ≤ 2× the floor's | {ms(lw['latency']['p99_ms'])} vs {ms(lf['latency']['p99_ms'])} ms | {r99:.2f}× | {verdict(r99 <= 2.0)} |")
ws_, fl, sio, sse, lp, siop = (sustained(k) for k in
                              ["pushlab-ws", "floor-ws", "socketio-ws", "pushlab-sse",
                               "pushlab-longpoll", "socketio-polling"])


def ratio_row(text, a, b, need, an, bn, keys=()):
    if a is None or b is None:
        w(f"| {text} | {an} or {bn} did not run | | – |")
        return
    if b == 0:
        w(f"| {text} | {num(a)} vs {num(b)} msg/s | ∞ | {verdict(a > 0)} |")
        return
    note = "".join(f" ({LABELS[k]} was client-limited: a lower bound)" for k in keys if client_limited(fanout.get(k)))
    w(f"| {text} | {num(a)} vs {num(b)} msg/s{note} | {a / b:.2f}× | {verdict(a / b >= need)} |")


ratio_row("`ws` fan-out ≥ 2× socket.io websocket", ws_, sio, 2.0, "ws", "socket.io",
          ("pushlab-ws", "socketio-ws"))
ratio_row("`ws` fan-out ≥ 0.8× the floor", ws_, fl, 0.8, "ws", "floor", ("pushlab-ws", "floor-ws"))
ratio_row("`longpoll` fan-out ≥ 5× socket.io polling", lp, siop, 5.0, "longpoll", "socket.io polling",
          ("pushlab-longpoll", "socketio-polling"))
ratio_row("`sse` fan-out ≥ 0.8× `ws`", sse, ws_, 0.8, "sse", "ws", ("pushlab-sse", "pushlab-ws"))
for key, limit in [("pushlab-ws", 12.0), ("pushlab-longpoll", 16.0)]:
    r = idle.get(key)
    if r:
        w(f"| {LABELS[key]} ≤ {limit:.0f} KiB RSS per idle connection at {r['subscribers']:,} | "
          f"{r['kib_per_connection']:.1f} KiB ({r['connected']:,} connected) | | "
          f"{verdict(r['kib_per_connection'] <= limit and r['connected'] == r['subscribers'])} |")

# Every run: 0 missing, 0 duplicated (latency, wire, mix, and every passing search step).
checked, bad = 0, []
for path in sorted(OUT.glob("*.json")):
    data = load(path.stem)
    if data is None:
        continue
    runs = []
    if "steps" in data:
        runs = [st for st in data["steps"] if st.get("passed")]
        if data.get("warmup") and data["warmup"]["rate"] <= (data.get("sustained_rate") or 0):
            runs.append(data["warmup"])
    elif "latency" in data:
        runs = [data]
    for st in runs:
        checked += 1
        lost = st["missing"] + st["missing_seqs"]
        dup = st["duplicated"] + st["duplicated_seqs"]
        if lost or dup:
            bad.append(f"{path.stem} at {st['rate']} msg/s: {lost} missing, {dup} duplicated")
w(f"| every run: 0 missing, 0 duplicated | {checked} runs checked (all fixed-rate runs and every passing search step); "
  f"{'none lost or repeated' if not bad else '; '.join(bad)} | | {verdict(not bad)} |")
# (warm-ups at a rate the search later sustained are included in that count)
failed_lost = []
for key, r in fanout.items():
    for st in (r or {}).get("steps", []):
        if not st.get("passed") and (st["missing"] + st["missing_seqs"] + st["duplicated"] + st["duplicated_seqs"]):
            failed_lost.append(f"{LABELS[key]} at {num(st['rate'])} msg/s: {failure_reason(st)}")
if failed_lost:
    w("")
    w("Overloaded search steps (those that failed) are left out of that check; in them, "
      "messages still queued 3 s after publishing stopped count as missing: "
      + "; ".join(failed_lost) + ".")
w("")

# Profile ---------------------------------------------------------------------
def profile(name):
    r = load(f"profile-{name}")
    if not r:
        return None
    out = {"run": r}
    out["us_per_delivery"] = (r["server_cpu_percent"] or 0) / 100 / max(r["deliveries_per_sec"], 1) * 1e6
    dso = OUT / f"profile-{name}.dso"
    shares = {}
    if dso.exists():
        for line in dso.read_text().splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
            if m:
                shares[m.group(2)] = float(m.group(1))
    out["kernel"] = shares.get("[kernel.kallsyms]", 0.0)
    sc = OUT / f"profile-{name}.syscalls"
    sends = receives = 0
    if sc.exists():
        for line in sc.read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:") and parts[0].strip().isdigit():
                if parts[2].endswith(("recvfrom", "_read")):
                    receives += int(parts[0])
                else:
                    sends += int(parts[0])
    window = r["rate"] * r["connected"] * 3
    out["sends_per_delivery"] = sends / window if window and sc.exists() else None
    out["receives_per_delivery"] = receives / window if window and sc.exists() else None
    ch = OUT / f"profile-{name}.children"
    out["children"] = ch.read_text().splitlines() if ch.exists() else []
    return out


PROFILED = ["pushlab-ws", "floor-ws", "pushlab-sse", "pushlab-longpoll", "floor-longpoll"]
prof = {name: profile(name) for name in PROFILED}
if any(prof.values()):
    w("## Profile: where the server's time goes")
    w("")
    anyrun = next(p for p in prof.values() if p)["run"]
    w(f"Each server at a load low enough that it keeps up, {anyrun['connected']:,} subscribers: "
      "WebSocket and SSE fan-out at the rate of the cost section's `ws` and `sse`, long-polls at its "
      "`longpoll` rate. `perf record -e cpu-clock --call-graph dwarf` for 3 s in the middle of publishing "
      "(this VM has no hardware counters), and `perf stat` on the send and receive syscalls "
      "(`sendto`, `write`, `writev`; `recvfrom`, `read`) over the same 3 s.")
    w("")
    w("| server | msg/s | server CPU | CPU per delivery | in the kernel | in user space | "
      "sends per delivery | receives per delivery | p50 / p99 ms |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def per(value):
        return "–" if value is None else format(value, ".2f")

    for name, p in prof.items():
        if not p:
            continue
        r = p["run"]
        k = p["kernel"] / 100
        us = p["us_per_delivery"]
        w(f"| {LABELS[name]} | {num(r['rate'])} | {pct(r['server_cpu_percent'])} | {us:.1f} µs | "
          f"{us * k:.1f} µs ({p['kernel']:.0f}%) | {us * (1 - k):.1f} µs | "
          f"{per(p['sends_per_delivery'])} | {per(p['receives_per_delivery'])} | "
          f"{ms(r['latency']['p50_ms'])} / {ms(r['latency']['p99_ms'])} |")
    w("")
    ws, lp, flp = (prof.get(n) for n in ("pushlab-ws", "pushlab-longpoll", "floor-longpoll"))
    if ws and flp and lp:
        kernel = flp["us_per_delivery"] * flp["kernel"] / 100
        w(f"The kernel's part of one long-poll delivery, in the floor's long-poll, is "
          f"{kernel:.1f} µs: {kernel / ws['us_per_delivery']:.2f}× a whole pushlab `ws` delivery "
          f"({ws['us_per_delivery']:.1f} µs), before any user-space work. In pushlab's long-poll it is "
          f"{lp['us_per_delivery'] * lp['kernel'] / 100:.1f} µs.")
        w("")
    for name, what in (("pushlab-ws", "`ws`"), ("pushlab-longpoll", "`longpoll`")):
        pl = prof.get(name)
        if not (pl and pl["children"]):
            continue
        w(f"pushlab's {what} profile, inclusive time (\"children\") by function, the frames below the "
          "runtime's own (percent of the server's samples):")
        w("")
        w("```text")
        shown = 0
        for line in pl["children"]:
            m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(.*)", line)
            if not m:
                continue
            total, kind, sym = float(m.group(1)), m.group(3), m.group(4)
            if total > 75 and kind == ".":
                continue
            keep = (kind == "." and any(k in sym for k in ("pushlab", "actix", "tokio::sync", "bytes::", "alloc::", "mio::")))
            keep = keep or sym in ("__sys_sendto", "tcp_sendmsg", "__sys_recvfrom", "tcp_recvmsg", "tcp_send_ack", "net_rx_action", "tcp_v4_rcv", "ep_poll", "__x64_sys_epoll_wait", "do_epoll_wait")
            if keep:
                w(f"{total:6.2f}%  [{kind}] {sym[:150]}")
                shown += 1
            if shown >= 30:
                break
        w("```")
        w("")
    lines.extend(console([f"profile-{name}" for name in prof]))
    w("")
    lines.extend(hand_written("analysis.md"))

# Cost per delivery and idle memory per transport (cost.sh) ----------------------
if "cost" in RAN:
    lines.extend(cost_section())
    w("")
elif COST_BEGIN in PAGE.read_text():
    # This run left the cost section out: the page keeps the one it has.
    w(kept_block(PAGE, "cost") and "\n".join(kept_block(PAGE, "cost")))
    w("")

# The sections written by hand, from docs/benchmarks/ -------------------------
lines.extend(fragments())

# Scale-out on Redis ------------------------------------------------------------
if "redis" in RAN:
    lines.extend(redis_section())
    w("")
elif redis_block_on_page():
    # This run left the Redis section out: the page keeps the one it has.
    w(redis_block_on_page())
    w("")

# Criterion -------------------------------------------------------------------
crit = OUT / "criterion.out"
if crit.exists():
    text = crit.read_text()
    rows = re.findall(r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[([^\]]+)\]", text, flags=re.M)
    if rows:
        w("## Criterion benches (`cargo bench`)")
        w("")
        w("In-process server on port 0 and clients as tasks over loopback sockets, "
          "not pinned. Criterion's [low, estimate, high] of the mean per iteration.")
        w("")
        w("| bench | time (low, estimate, high) |")
        w("| --- | --- |")
        for name, t in rows:
            w(f"| `{name.strip()}` | {t} |")
        w("")
        w("```console")
        w("$ " + cmd("criterion"))
        w("```")
        w("")

# The sections of report-secure.py (HTTPS, HTTP/2 and WebTransport) and
# cluster-compare.sh, from their own runs, stay as they were, after the
# sections above (each ends with a blank line).
lines += kept_block(PAGE, "secure")
if kept_block(PAGE, "secure"):
    lines.append("")
lines += kept_block(PAGE, "cluster")
PAGE.write_text("\n".join(lines) + "\n")


def rfc6202():
    """The measured side of RFC 6202's long-polling issues, as paragraphs."""
    out = []
    lp1, ws1, sse1 = wire.get(("pushlab-longpoll", 1)), wire.get(("pushlab-ws", 1)), wire.get(("pushlab-sse", 1))
    lp30 = wire.get(("pushlab-longpoll", 30))
    lp100, ws100 = latency.get("pushlab-longpoll"), latency.get("pushlab-ws")
    poll = latency.get("pushlab-poll")
    rtt = poll["poll_rtt"]["p50_ms"] if poll and poll.get("poll_rtt") else None
    if lp1 and ws1:
        framing = lp1["wire_received_per_delivery"] - lp1["payload_per_delivery"]
        share = 100 * (framing + lp1["wire_sent_per_delivery"]) / (lp1["wire_received_per_delivery"] + lp1["wire_sent_per_delivery"])
        out.append(
            f"**Header overhead.** \"Every long poll request and long poll response is a complete "
            f"HTTP message.\" Measured at 1 event/s: {lp1['wire_received_per_delivery']:.0f} bytes in per "
            f"event, of which {lp1['payload_per_delivery']:.0f} are the event's JSON, and "
            f"{lp1['wire_sent_per_delivery']:.0f} bytes out (the next request), so {share:.0f}% of the "
            f"bytes are headers and envelope; {lp1['requests_per_delivery']:.2f} requests per event. The same "
            f"event costs {ws1['wire_received_per_delivery']:.0f} bytes on a WebSocket"
            + (f" and {sse1['wire_received_per_delivery']:.0f} on SSE" if sse1 else "")
            + ". The load generator's requests carry only `Host`; a browser adds its User-Agent, "
            "Accept and cookie headers to every one of them, so in a browser the share is higher still.")
        out.append("")
    if lp100 and ws100 and rtt is not None:
        l, w_ = lp100["latency"], ws100["latency"]
        out.append(
            f"**Maximal latency.** The RFC: average latency close to one network transit, maximal "
            f"latency over three (response, next request, response), that is 1.5 RTT. On this machine's "
            f"loopback an empty poll's round trip is {ms(rtt)} ms (p50), almost all of it processing rather "
            f"than transit, so 1.5 RTT ≈ {ms(1.5 * rtt)} ms. At 1 event/s a request is always held when "
            + (f"the event comes: long-poll p50 {ms(lp1['latency']['p50_ms'])} ms against "
               f"{ms(ws1['latency']['p50_ms'])} ms on a WebSocket. " if lp1 and ws1 else "the event comes. ")
            + f"At 100 events/s, one every 10 ms: long-poll p50 {ms(l['p50_ms'])} ms, p99 {ms(l['p99_ms'])} ms "
            f"against the WebSocket's {ms(w_['p50_ms'])} / {ms(w_['p99_ms'])} ms, with "
            f"{lp100['requests_per_delivery']:.2f} requests per event"
            + (" (below 1.00: some answers carried several events, which had come while no request "
               "was held, the RFC's worst case). " if lp100["requests_per_delivery"] < 0.995 else
               ": every event had its own answer, so a request was held each time one came; the "
               "client re-asks well inside the 10 ms between events. ")
            + "On loopback, where 1.5 RTT is a fraction of a millisecond, the long-poll's worst case "
            "is lost in scheduling noise; on a link with real transit time the same pattern adds up to "
            "1.5 RTT, 150 ms on a 100 ms mobile link.")
        out.append("")
    fan = fanout.get("pushlab-longpoll")
    steps = (fan or {}).get("steps", [])
    if lp30 or steps:
        text = ("**Message rate and graceful degradation.** Without batching a long-polling client gets "
                "at most one answer per round trip. pushlab answers with everything after the cursor "
                "(up to 1000 events), so events that come while no request is held share the next answer. ")
        if lp30:
            text += (f"At 30 events/s to one client there were {lp30['requests_per_delivery']:.2f} requests "
                     "per event" + (": the client was always back in time. "
                                    if lp30["requests_per_delivery"] >= 0.995 else ". "))
        if steps:
            low = min(steps, key=lambda st: st["requests_per_delivery"])
            ok = fan.get("sustained")
            if ok:
                text += (f"In the fan-out to {ok['subscribers']:,} long-pollers at the sustained "
                         f"{num(ok['rate'])} msg/s: {ok['requests_per_delivery']:.2f} requests and "
                         f"{ok['wire_received_per_delivery']:.0f} bytes in per delivered event. ")
            who = ("the load generator" if (low["loadgen_cpu_percent"] or 0) >= CLIENT_LIMIT else "the server")
            text += (f"Overloaded, at {num(low['rate'])} msg/s (server CPU {pct(low['server_cpu_percent'])}, "
                     f"load generator {pct(low['loadgen_cpu_percent'])}: {who} was the limit), "
                     f"answers grew: {low['requests_per_delivery']:.2f} requests and "
                     f"{low['wire_received_per_delivery']:.0f} bytes in per event, at a p99 of "
                     f"{ms(low['latency']['p99_ms'])} ms. That is the RFC's graceful degradation: under load "
                     "the overhead per message falls and latency pays for it.")
        out.append(text)
        out.append("")
    il, iw = idle.get("pushlab-longpoll"), idle.get("pushlab-ws")
    if il and iw:
        out.append(
            f"**Allocated resources.** A held long-poll is an open connection and a pending request: "
            f"{il['kib_per_connection']:.1f} KiB of server RSS each at {il['connected']:,} held, against "
            f"{iw['kib_per_connection']:.1f} KiB per idle WebSocket.")
    if not out:
        out.append("(this run has no long-poll results)")
    return out

# docs/transports.md: replace the measured block between the markers.
tpath = ROOT / "docs" / "transports.md"
# A run that measured none of what it shows leaves it as it is.
if tpath.exists() and RAN & {"latency", "wire", "fanout", "idle"}:
    text = tpath.read_text()
    measured = [f"Measured by `crates/pushlab-bench/run.sh` (results `{OUT.name}`; method and machine in "
                "[benchmarks.md](benchmarks.md)); one subscriber, the server pinned to one core.", ""]
    text = replace_block(text, "measured", measured + wire_table()) or text
    text = replace_block(text, "rfc6202", rfc6202()) or text
    tpath.write_text(text)
print("wrote docs/benchmarks.md")
