#!/usr/bin/env python3
"""Memory per idle room: opens N rooms on a fresh pushlab and divides the
server's RSS rise by N.

    crates/pushlab-bench/room-memory.py [--rooms 1000] [--bin target/release/pushlab]

Each room is opened the way a client opens one: a registration (so it holds
one session, its join in the log and a presence entry), or, with --empty, a
read (an open room with an empty log and nobody in it). The server runs with
one worker, no rate or per-address limits, and a room idle timeout long
enough that nothing is reclaimed while it is measured. Prints one JSON line.
"""

import argparse
import http.client
import json
import re
import subprocess
import sys

from rss import settle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--bin", default="target/release/pushlab")
    parser.add_argument("--empty", action="store_true", help="open rooms by reading, with nobody in them")
    args = parser.parse_args()

    server = subprocess.Popen(
        [args.bin, "--addr", "127.0.0.1:0", "--workers", "1", "--rate-limit", "0",
         "--ip-connections", "0", "--ip-sessions", "0", "--ip-registrations", "0",
         "--ip-rate-limit", "0", "--ip-rooms", "0", "--max-rooms", str(args.rooms + 10),
         "--room-idle-timeout", "3600", "--presence-timeout", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        if not match:
            sys.exit(f"pushlab did not start: {line!r}")
        conn = http.client.HTTPConnection(match.group(1), int(match.group(2)))
        # Warm up: one room, so the allocator's arenas exist before the baseline.
        conn.request("GET", "/poll?room=warmup")
        conn.getresponse().read()
        before = settle(server.pid)
        for i in range(args.rooms):
            room = f"r{i}"
            if args.empty:
                conn.request("GET", f"/poll?room={room}")
            else:
                body = json.dumps({"name": "someone"})
                conn.request("POST", f"/register?room={room}", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"room {room}: HTTP {response.status}")
        after = settle(server.pid)
        conn.request("GET", "/stats")
        total = json.loads(conn.getresponse().read())["total"]
        print(json.dumps({
            "rooms": args.rooms,
            "kind": "empty" if args.empty else "one session each",
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_room": round((after - before) / args.rooms, 2),
            "server_total": total,
        }))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
