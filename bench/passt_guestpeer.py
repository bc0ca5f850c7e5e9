"""Run in the guest by bench/passt_probe.py: connect to HOST:PORT, do OP (S: send SIZE bytes, G: receive
them), print MB/s and the guest's busy CPU seconds (/proc/stat) of the transfer as JSON."""

import json
import os
import socket
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def busy() -> int:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


host, port, op, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
zeros = bytes(1 << 20)
b0, t0 = busy(), time.perf_counter()
with socket.create_connection((host, port), timeout=120) as c:
    c.sendall(f"{op} {size}\n".encode())
    if op == "S":
        left = size
        while left:
            left -= c.send(zeros[: min(left, len(zeros))])
        c.shutdown(socket.SHUT_WR)
        assert int(c.recv(64)) == size
    else:
        n = 0
        buf = bytearray(1 << 20)
        while n < size:
            got = c.recv_into(buf)
            if not got:
                break
            n += got
        assert n == size, n
elapsed = time.perf_counter() - t0
print(json.dumps({"mbps": size / elapsed / 1e6, "guest_busy_s": (busy() - b0) / TICK}))
