"""The server's resident memory, read from /proc, for the memory scripts
beside this file (room-memory.py, full-room.py)."""

import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    """RSS once jemalloc's background purge has had its second."""
    time.sleep(2.5)
    return rss_kib(pid)
