"""A peer inside passt's namespace for bench/passt_probe.py's `guest-initiated` rows (run under nsenter):
listens on NS_IP:7000; per connection reads one op line from the guest: `S SIZE` (the guest sends SIZE bytes,
this counts them and answers the count) or `G SIZE` (this sends SIZE bytes of zeros)."""

import socket
import sys

ZEROS = bytes(1 << 20)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000))
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    with c:
        line = b""
        while not line.endswith(b"\n"):
            got = c.recv(1)
            if not got:
                break
            line += got
        if not line:
            continue
        op, size = line.split()
        size = int(size)
        if op == b"S":
            n = 0
            while n < size:
                got = c.recv(1 << 20)
                if not got:
                    break
                n += len(got)
            c.sendall(str(n).encode())
        else:
            left = size
            while left:
                left -= c.send(ZEROS[: min(left, len(ZEROS))])
