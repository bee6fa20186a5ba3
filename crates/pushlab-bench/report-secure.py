#!/usr/bin/env python3
"""Writes the section "HTTPS, HTTP/2 and WebTransport" of docs/benchmarks.md,
between its markers, from a results directory of
`ONLY=tls,webtransport crates/pushlab-bench/run.sh` (the runs named
`secure-*`). The rest of the page is left as it is. Every figure is read
from the JSON the load generator wrote; the reading below the tables is
analysis-secure.md, written by hand beside this script.

    python3 crates/pushlab-bench/report-secure.py target/bench-results/<time>
"""
import re
import sys
from pathlib import Path

from results import CLIENT_LIMIT, Results, failure_reason, lost, ms, num, pct

OUT = Path(sys.argv[1])
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- secure:begin -->", "<!-- secure:end -->"

# Each run's suffix after `secure-<kind>-`, and how the tables name it.
LABELS = {
    "ws": "`ws`, plain",
    "tls-ws": "`wss` (TLS, HTTP/1.1)",
    "wt": "`wt`, WebTransport (QUIC, TLS 1.3)",
    "sse": "`sse`, HTTP/1.1 plain",
    "tls-sse": "`sse`, HTTPS/1.1",
    "tls-sse-h2": "`sse`, HTTP/2 over TLS",
}
CURSOR_LABELS = {
    "ws": "`ws`, plain",
    "wt": "`wt`, cursor moves on the stream",
    "wt-datagrams": "`wt-datagrams`, cursor moves as datagrams",
}


RESULTS = Results(OUT)
load = RESULTS.load
cmd = RESULTS.cmd


def why_missing(name):
    return RESULTS.why_missing(name, "not run")


def us_per_delivery(r):
    cpu = r.get("server_cpu_percent")
    if cpu is None or not r["deliveries_per_sec"]:
        return None
    return cpu / 100 / r["deliveries_per_sec"] * 1e6


def machine_line(key):
    text = (OUT / "machine.txt").read_text() if (OUT / "machine.txt").exists() else ""
    m = re.search(rf"^{key}: (.*)$", text, flags=re.M)
    return m.group(1).strip() if m else "?"


def rate_rows(prefix, labels):
    """Rows of a fixed-rate table for the runs PREFIX-<key>."""
    rows = []
    for key, label in labels.items():
        name = f"{prefix}-{key}"
        r = load(name)
        if not r:
            if cmd(name):
                rows.append(f"| {label} | {why_missing(name)} |||||||||")
            continue
        l = r["latency"]
        rows.append(
            f"| {label} | {r['connected']:,} | {num(r['deliveries_per_sec'])} | {ms(l['p50_ms'])} | "
            f"{ms(l['p99_ms'])} | {ms(l['max_ms'])} | {lost(r):,} | {pct(r['server_cpu_percent'])} | "
            f"**{num(us_per_delivery(r), 1)}** | {num(r['wire_received_per_delivery'], 1)} | "
            f"{pct(r['loadgen_cpu_percent'])} |")
    return rows


RATE_HEADER = [
    "| transport | subscribers | deliveries/s | p50 ms | p99 ms | max ms | lost | server CPU | "
    "server CPU µs per delivery | bytes in per delivery | load gen CPU |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def search_row(label, name):
    r = load(name)
    if not r:
        return f"| {label} | {why_missing(name)} ||||||||" if cmd(name) else None
    s = r.get("sustained")
    fail = None
    if r.get("first_failure") is not None:
        fail = ([st for st in r["steps"] if st["rate"] == r["first_failure"]] or [None])[-1]
    client = (r.get("loadgen_cpu_at_failure") or 0) >= CLIENT_LIMIT
    limit = "–" if fail is None else ("**client** (load generator ≥ 85%)" if client else "server")
    there = f"{pct(r.get('server_cpu_at_failure'))} / {pct(r.get('loadgen_cpu_at_failure'))}"
    if not s:
        return (f"| {label} | none passed | | | | | {num(r.get('first_failure'))} | "
                f"{failure_reason(fail)} | {there} | {limit} |")
    return (f"| {label} | **{num(r['sustained_rate'])}** | {num(s['deliveries_per_sec'])} | "
            f"{ms(s['latency']['p50_ms'])} | {ms(s['latency']['p99_ms'])} | "
            f"{num(us_per_delivery(s), 1)} | {num(r.get('first_failure'))} | {failure_reason(fail)} | "
            f"{there} | {limit} |")


def section():
    out = []
    o = out.append
    o("## HTTPS, HTTP/2 and WebTransport")
    o("")
    o("Written by `crates/pushlab-bench/run.sh` (its `tls` and `webtransport` sections, which the default "
      "run leaves out; `ONLY=tls,webtransport` runs them alone and rewrites only this section, with "
      f"`report-secure.py`) from the results in `{OUT.relative_to(ROOT) if OUT.is_absolute() and OUT.is_relative_to(ROOT) else OUT}`, "
      "one run: every figure in the tables comes from it, and the reading says so of the one it adds. "
      f"Run on {machine_line('date')}, {machine_line('nproc')} cores, pushlab {machine_line('pushlab commit')}, "
      f"load average {machine_line('loadavg at start')} at the start and {machine_line('loadavg at end')} "
      "at the end (1, 5 and 15 minutes).")
    o("")
    searched = bool(list(OUT.glob("secure-search-*.cmd")))
    o("```console")
    o(f"$ {'' if searched else 'SECURE_SEARCH=0 '}ONLY=tls,webtransport crates/pushlab-bench/run.sh   "
      f"# this section: {machine_line('elapsed')} in this run; the searches add about 20 minutes")
    o("```")
    o("")
    o("Method, beyond the page's:")
    o("")
    o("- One server per run, pinned to core 1 with `--workers 1 --rate-limit 0`; the load generator on core 0. "
      "`ws`, `sse` and `wt` come from a server under `--webtransport` (HTTP and WebSocket on plain TCP, "
      "WebTransport on UDP at the same port number); `wss` and both HTTPS SSE from a server under `--tls` "
      "(pushlab's own self-signed P-256 certificate, ALPN `h2` and `http/1.1`).")
    o("- The load generator speaks TLS with rustls on ring, as the server does, asking for `http/1.1` "
      "(`wss`, HTTPS/1.1 SSE) or `h2` (SSE over HTTP/2, with the `h2` crate, one stream per connection). "
      "For this benchmark only it accepts any certificate (the handshake signatures are still checked): "
      "it measures the server's cost, on loopback. The WebTransport client (wtransport 0.7, quinn) pins the "
      "certificate's SHA-256 from `GET /config`, as a browser's `serverCertificateHashes` does; it opens one "
      "QUIC connection per subscriber, from its own UDP socket.")
    o("- Publishers always use a WebSocket: `ws`, or `wss` against the `--tls` server. Bytes in per delivery "
      "are counted under TLS on TCP (records and handshake included); for WebTransport they are quinn's own "
      "UDP byte counts for each connection (QUIC headers, acknowledgements and any retransmission included).")
    o("- Cursor moves (`--events cursors`): the publisher sends `mousemove`s whose `x` carries the message's "
      "index (over 2^20) and `y` the step; each is a log event like a chat message (about 118 bytes), and its "
      "latency counts from the same schedule. `wt-datagrams` opens its session with `cursors=datagrams`, so the "
      "server sends each `mousemove` as one datagram; a datagram never delivered counts as lost.")
    o("- CPU per delivery is the server's CPU over the publishing window (from `/proc/PID/stat`) over its "
      "deliveries per second, at a fixed rate every transport keeps up with, so it is a cost, not a ceiling.")
    o("")

    o("### Latency to one subscriber, 100 msg/s")
    o("")
    o(RATE_HEADER[0])
    o(RATE_HEADER[1])
    out.extend(rate_rows("secure-latency", {
        "ws": LABELS["ws"], "wt": LABELS["wt"], "tls-ws": LABELS["tls-ws"], "sse": LABELS["sse"],
        "tls-sse": LABELS["tls-sse"], "tls-sse-h2": LABELS["tls-sse-h2"]}))
    o("")

    fixed = load("secure-fixed-ws")
    subs = f"{fixed['subscribers']:,}" if fixed else "the fan-out's"
    rate = num(fixed["rate"]) if fixed else "?"
    o(f"### Fan-out to {subs} subscribers at {rate} msg/s: what a delivery costs the server")
    o("")
    o(RATE_HEADER[0])
    o(RATE_HEADER[1])
    out.extend(rate_rows("secure-fixed", {
        "ws": LABELS["ws"], "wt": LABELS["wt"], "tls-ws": LABELS["tls-ws"], "sse": LABELS["sse"],
        "tls-sse": LABELS["tls-sse"], "tls-sse-h2": LABELS["tls-sse-h2"]}))
    o("")
    pairs = [("tls-ws", "ws", "`wss` over `ws`"), ("tls-sse", "sse", "HTTPS/1.1 SSE over plain SSE"),
             ("tls-sse-h2", "tls-sse", "HTTP/2 SSE over HTTPS/1.1 SSE"), ("wt", "ws", "`wt` over `ws`")]
    costs = []
    for a, b, what in pairs:
        ra, rb = load(f"secure-fixed-{a}"), load(f"secure-fixed-{b}")
        ua, ub = (us_per_delivery(ra) if ra else None), (us_per_delivery(rb) if rb else None)
        if ua is not None and ub:
            costs.append(f"{what}: {ua - ub:+.1f} µs per delivery ({ua / ub:.2f}×)")
    if costs:
        o("Differences in server CPU per delivery: " + "; ".join(costs) + ".")
        o("")

    o("### Cursor moves: the stream or datagrams")
    o("")
    o("One subscriber at 100 msg/s, then the fan-out at the fixed rate:")
    o("")
    o(RATE_HEADER[0])
    o(RATE_HEADER[1])
    out.extend(rate_rows("secure-cursors-latency", CURSOR_LABELS))
    out.extend(rate_rows("secure-cursors-fixed", CURSOR_LABELS))
    o("")

    o("### Fan-out: highest sustained publish rate")
    o("")
    if not list(OUT.glob("secure-search-*.cmd")):
        o("Not measured in this run (`SECURE_SEARCH=0` leaves the searches out; they take about 20 minutes, "
          "and on a busy machine measure the neighbours rather than the server). `run.sh` runs them by default.")
        o("")
        return memory_and_commands(out)
    o("Searched as in the fan-out section above (p99 ≤ 50 ms, nothing missing or duplicated, every subscriber "
      "connected), each step with its subscribers connected afresh.")
    o("")
    o("| transport | sustained msg/s | deliveries/s | p50 ms | p99 ms | server CPU µs per delivery | "
      "first failure msg/s | why it failed | server / load gen CPU there | limit |")
    o("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
    for key in ("ws", "wt", "tls-ws", "sse", "tls-sse", "tls-sse-h2"):
        row = search_row(LABELS[key], f"secure-search-{key}")
        if row:
            o(row)
    o("")

    return memory_and_commands(out)


def memory_and_commands(out):
    o = out.append
    o("### Memory per idle connection")
    o("")
    o("| transport | connections | server RSS before KiB | after KiB | KiB per connection | open per /stats |")
    o("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key in ("ws", "wt", "tls-ws", "tls-sse-h2"):
        name = f"secure-idle-{key}"
        r = load(name)
        if not r:
            if cmd(name):
                o(f"| {LABELS[key]} | {why_missing(name)} |||||")
            continue
        o(f"| {LABELS[key]} | {r['connected']:,} of {r['subscribers']:,} | {num(r['rss_before_kib'])} | "
          f"{num(r['rss_after_kib'])} | **{r['kib_per_connection']:.1f}** | {num(r.get('server_open'))} |")
    o("")
    analysis = BENCH / "analysis-secure.md"
    if analysis.exists():
        o(analysis.read_text().strip())
        o("")
    o("Commands (`$URL` and `$PID` are the fresh server's; an `https://` URL for the `--tls` server):")
    o("")
    o("```console")
    names = sorted((f.stem for f in OUT.glob("secure-*.cmd")), key=lambda n: (OUT / f"{n}.cmd").stat().st_mtime)
    for name in names:
        o(f"$ {cmd(name)}   # {name}")
    o("```")
    return out


text = PAGE.read_text()
block = "\n".join([BEGIN, ""] + section() + ["", END])
if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    text = head + block + rest.split(END, 1)[1]
elif "\n<!-- cluster:begin -->" in text:
    head, tail = text.split("\n<!-- cluster:begin -->", 1)
    text = head + "\n" + block + "\n\n<!-- cluster:begin -->" + tail
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
PAGE.write_text(text)
print("wrote the HTTPS, HTTP/2 and WebTransport section of docs/benchmarks.md")
