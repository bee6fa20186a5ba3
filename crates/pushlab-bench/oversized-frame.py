#!/usr/bin/env python3
"""Sends one WebSocket frame whose header declares more than the server's
frame limit, then streams its payload, and reports how far the server let it
get: whether it refused the frame (a close frame, or the connection ended)
and how much its resident memory grew meanwhile.

    oversized-frame.py URL PID [--declare BYTES] [--send BYTES]

URL is the server's http://HOST:PORT, PID its process (for /proc/PID/status).
A server that reads a frame's header before its payload refuses at once; a
server that buffers the payload first takes it all in. Prints one JSON
object. Talks only to the address it is given (a local test server).
"""
import argparse
import base64
import json
import os
import select
import socket
import struct
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("pid", type=int)
    parser.add_argument("--declare", type=int, default=1 << 30, help="the frame length the header declares")
    parser.add_argument("--send", type=int, default=64 << 20, help="payload bytes to send at most")
    args = parser.parse_args()
    host, port = args.url.split("://", 1)[-1].rstrip("/").rsplit(":", 1)

    conn = socket.create_connection((host, int(port)), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            raise SystemExit("the server closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode()
    if " 101 " not in status:
        raise SystemExit(f"no upgrade: {status}")
    received = head.split(b"\r\n\r\n", 1)[1]

    time.sleep(0.5)
    before = rss_kib(args.pid)
    # FIN + text; masked, 64-bit length; an all-zero mask keeps the payload as sent.
    conn.sendall(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", args.declare) + b"\0\0\0\0")
    chunk = b"x" * 65536
    sent, peak, outcome = 0, before, "took everything sent"
    conn.setblocking(False)
    deadline = time.monotonic() + 60
    while sent < args.send and time.monotonic() < deadline:
        readable, writable, _ = select.select([conn], [conn], [], 2.0)
        if readable:
            try:
                data = conn.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                outcome = "connection ended"
                break
            received += data
            # A close frame from the server (opcode 8), after any text frames.
            if b"\x88" in received:
                outcome = "close frame"
                break
        if not writable and not readable:
            outcome = "stopped reading"
            break
        if writable:
            try:
                sent += conn.send(chunk[: args.send - sent])
            except (BlockingIOError, InterruptedError):
                pass
            except ConnectionError:
                outcome = "connection ended"
                break
        if sent % (4 << 20) < 65536:
            peak = max(peak, rss_kib(args.pid))
    time.sleep(0.5)
    peak = max(peak, rss_kib(args.pid))
    conn.close()
    print(json.dumps({
        "declared_bytes": args.declare,
        "payload_sent_bytes": sent,
        "outcome": outcome,
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_growth_kib": peak - before,
    }))


if __name__ == "__main__":
    main()
