"""Run in the guest by bench/passt_probe.py: what a guest process reaches through the passt NIC (outbound).

TCP to passt's gateway, to its namespace's own address, to two documentation (TEST-NET) addresses routed
through the passt NIC, and a DNS query to the gateway; each line says what happened and how long it took."""

import socket
import time

TARGETS = [("10.0.3.2", 22), ("10.0.3.2", 53), ("10.0.3.3", 9555), ("192.0.2.1", 80), ("198.51.100.1", 443)]
QUERY = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")  # A example.com

for host, port in TARGETS:
    start = time.monotonic()
    s = socket.socket()
    s.settimeout(8)
    try:
        s.connect((host, port))
        s.settimeout(2)
        try:
            got = s.recv(16)
            what = "connected, then " + ("EOF" if not got else repr(got))
        except OSError as exc:
            what = f"connected, then {exc!r}"
    except OSError as exc:
        what = repr(exc)
    s.close()
    print(f"tcp {host}:{port}: {what} ({time.monotonic() - start:.2f} s)")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.sendto(QUERY, ("10.0.3.2", 53))
try:
    print("udp 10.0.3.2:53:", u.recvfrom(512))
except OSError as exc:
    print("udp 10.0.3.2:53:", repr(exc))
