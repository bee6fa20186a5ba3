#!/usr/bin/env python3
"""Pipelined requests from clients that read nothing: how much memory they cost a pushlab server.

usage: pipeline-flood.py PUSHLAB_BIN [CONNECTIONS] [PATH] [SECONDS]

Starts the binary on 127.0.0.1 (one worker, no per-address connection limit),
opens CONNECTIONS sockets (50) with a 4 KiB receive buffer, and on each
pipelines 20,000 `GET PATH` (/time) requests without ever reading an answer,
for SECONDS (6). Prints the server's RSS then and 5 s later, with the
requests it answered and the bytes it read and wrote (from /metrics). Only
loopback; the server is killed at the end.
"""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

binary = sys.argv[1]
conns = int(sys.argv[2]) if len(sys.argv) > 2 else 50
path = sys.argv[3] if len(sys.argv) > 3 else "/time"
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 6.0
env = dict(os.environ, PUSHLAB_IP_CONNECTIONS="0")
server = subprocess.Popen([binary, "--addr", "127.0.0.1:0", "--workers", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
try:
    port = int(server.stdout.readline().decode().rsplit(":", 1)[1])

    def rss_mib():
        status = open(f"/proc/{server.pid}/status").read()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024

    def metric(name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        return float(re.search(rf"^{name} (\S+)", text, re.M).group(1))

    before = rss_mib()
    pipeline = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * 20_000
    sockets = []
    for _ in range(conns):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        sockets.append([s, 0])
    start = time.time()
    while time.time() - start < seconds:
        for entry in sockets:
            if entry[1] < len(pipeline):
                try:
                    entry[1] += entry[0].send(pipeline[entry[1]:entry[1] + 65536])
                except BlockingIOError:
                    pass
        time.sleep(0.01)
    during = rss_mib()
    time.sleep(5)
    print(f"{binary}: {conns} connections pipelining GET {path}: RSS {before} MiB before, "
          f"{during} MiB after {seconds:.0f} s, {rss_mib()} MiB 5 s later; "
          f"answered {metric('pushlab_other_requests_total'):.0f}, "
          f"read {metric('pushlab_other_received_bytes_total') / 1e6:.1f} MB, "
          f"wrote {metric('pushlab_other_sent_bytes_total') / 1e6:.1f} MB")
finally:
    server.kill()
