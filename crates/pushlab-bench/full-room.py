#!/usr/bin/env python3
"""What full rooms cost: fills ROOMS rooms on a fresh pushlab with MESSAGES
chat messages of 2000 emoji each (the largest text there is in bytes, as in
issue 20) and reports the server's RSS rise.

    crates/pushlab-bench/full-room.py [--bin target/release/pushlab] [--rooms 1]
        [--messages 10000] [-- extra pushlab flags...]

The server runs with one worker, no rate or per-address limits; whatever
follows `--` is passed to it (such as `--room-bytes 8388608`). Sends go one
after another over one keep-alive connection, each must be stored (200),
and a refused one (503 store_full) is counted instead. Prints one JSON line.
"""

import argparse
import http.client
import json
import re
import subprocess
import sys
import time

from rss import settle


def call(conn, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    return response.status, response.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/pushlab")
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("flags", nargs="*", help="after --: more pushlab flags")
    args = parser.parse_args()

    server = subprocess.Popen(
        [args.bin, "--addr", "127.0.0.1:0", "--workers", "1", "--rate-limit", "0",
         "--ip-connections", "0", "--ip-sessions", "0", "--ip-registrations", "0",
         "--ip-rate-limit", "0", "--ip-rooms", "0", "--room-idle-timeout", "3600",
         "--presence-timeout", "3600", *args.flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        if not match:
            sys.exit(f"pushlab did not start: {line!r}")
        conn = http.client.HTTPConnection(match.group(1), int(match.group(2)))
        # Warm up: one room, so the allocator's arenas exist before the baseline.
        call(conn, "GET", "/poll?room=warmup")
        before = settle(server.pid)
        text = json.dumps({"type": "message", "text": "\U0001F600" * 2000})
        started = time.monotonic()
        stored = refused = 0
        kept = []
        for r in range(args.rooms):
            room = f"full{r}"
            status, body = call(conn, "POST", f"/register?room={room}", json.dumps({"name": "flood"}))
            if status != 200:
                sys.exit(f"register in {room}: HTTP {status} {body[:200]!r}")
            session = json.loads(body)["session"]
            head = json.loads(body)["head"] if "head" in json.loads(body) else 1
            for _ in range(args.messages):
                status, body = call(conn, "POST", f"/send?session={session}&room={room}", text)
                if status == 200:
                    stored += 1
                    head = json.loads(body)["seq"]
                elif status == 503 and b"store_full" in body:
                    refused += 1
                else:
                    sys.exit(f"send in {room}: HTTP {status} {body[:200]!r}")
            status, body = call(conn, "GET", f"/poll?since=0&room={room}")
            batch = json.loads(body)
            first = batch["events"][0]["seq"] if batch["events"] else None
            kept.append(None if first is None else head - first + 1)
        seconds = round(time.monotonic() - started, 1)
        after = settle(server.pid)
        print(json.dumps({
            "rooms": args.rooms,
            "messages_per_room": args.messages,
            "flags": args.flags,
            "stored": stored,
            "refused_store_full": refused,
            "events_kept_per_room": kept,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "rss_rise_mib": round((after - before) / 1024, 1),
            "seconds": seconds,
        }))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
