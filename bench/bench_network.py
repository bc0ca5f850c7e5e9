"""Container networking benchmarks (root; runs in a private network namespace, touches nothing of the host).

1. netlink vs `ip`: configuring a veth endpoint (create pair, enslave, up, address, delete) through our raw
   rtnetlink module vs spawning iproute2 for each step.
   Also a single cheap call (link up) to show the per-call cost apart from the kernel's own veth work.
2. published ports, DNAT vs userland proxy: TCP connect+1-byte round trip latency and bulk throughput from a
   client process in the guest to 127.0.0.1:<host port>, with the container's server a separate process, and
   the direct path to the container IP as the reference.

    python bench/bench_network.py [--quick]

Prints absolute numbers and ratios measured in this same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.netguest import FakeUpstream, make_manager, private_guest, start_container, unique_names  # noqa: E402

from pymachine_agent.network import EndpointConfig, PortSpec  # noqa: E402
from pymachine_agent.network.netlink import Netlink  # noqa: E402

SERVER = r"""
import socket, sys, threading
def handle(c):
    with c:
        first = c.recv(1)
        if first == b"L":            # latency probe: echo one byte
            c.sendall(b"L")
            return
        n = len(first)
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            n += len(d)
        c.sendall(str(n).encode())
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(512)
print("up", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import socket, sys, time
host, port, conns, mbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
for _ in range(conns):
    with socket.create_connection((host, port)) as c:
        c.sendall(b"L"); assert c.recv(1) == b"L"
lat = (time.perf_counter() - t0) / conns
chunk = b"x" * (1 << 20)
t0 = time.perf_counter()
with socket.create_connection((host, port)) as c:
    c.sendall(b"B")
    for _ in range(mbytes):
        c.sendall(chunk)
    c.shutdown(socket.SHUT_WR)
    got = int(c.recv(64))
thr = (time.perf_counter() - t0)
assert got == mbytes * (1 << 20) + 1, got
print(lat, (mbytes / thr))
"""


def bench_netlink(rounds: int) -> tuple[float, float]:
    def with_netlink() -> None:
        with Netlink() as nl:
            nl.add_bridge("bbr0")
            br = nl.index("bbr0")
            for _ in range(rounds):
                nl.add_veth("bv0", "bv1", master=br)
                i = nl.index("bv0")
                nl.set_link(i, up=True)
                nl.add_address(nl.index("bv1"), "10.250.0.2", 24)
                nl.delete_link(i)
            nl.delete_link(br)

    def with_ip() -> None:
        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True)

        ip("link", "add", "bbr0", "type", "bridge")
        for _ in range(rounds):
            ip("link", "add", "bv0", "master", "bbr0", "type", "veth", "peer", "name", "bv1")
            ip("link", "set", "bv0", "up")
            ip("addr", "add", "10.250.0.2/24", "dev", "bv1")
            ip("link", "del", "bv0")
        ip("link", "del", "bbr0")

    out = []
    for fn in (with_netlink, with_ip):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) / rounds)
    return out[0], out[1]


def bench_link_up(rounds: int) -> tuple[float, float]:
    def with_netlink() -> None:
        with Netlink() as nl:
            i = nl.index("lo")
            for _ in range(rounds):
                nl.set_link(i, up=True)

    def with_ip() -> None:
        for _ in range(rounds):
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    out = []
    for fn in (with_netlink, with_ip):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) / rounds)
    return out[0], out[1]


def bench_ports(mode: str, conns: int, mbytes: int) -> dict[str, tuple[float, float]]:
    with private_guest(), tempfile.TemporaryDirectory() as tmp:  # a fresh guest per mode
        upstream = FakeUpstream({})
        mgr = make_manager(Path(tmp) / "state", [], unique_names(), upstream, port_mode=mode)
        mgr.start()
        box = start_container()
        try:
            info = mgr.attach(
                "b" * 64, box.pid, EndpointConfig(name="srv", ports=[PortSpec(80, "tcp", 8080)])
            )
            server = subprocess.Popen(
                ["nsenter", "-t", str(box.pid), "-n", sys.executable, "-c", SERVER],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdout.readline().strip() == "up"
            results = {}
            for label, host, port in (
                ("published", "127.0.0.1", 8080),
                ("direct", info.attachments[0].ip, 80),
            ):
                out = subprocess.run(
                    [sys.executable, "-c", CLIENT, host, str(port), str(conns), str(mbytes)],
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    raise SystemExit(f"client failed ({mode}, {label}): {out.stderr}")
                out = out.stdout.split()
                results[label] = (float(out[0]), float(out[1]))
            server.kill()
            server.wait()
            return results
        finally:
            mgr.forget("b" * 64)  # close() alone keeps kernel state (for the next agent): undo it here
            box.stop()
            mgr.close()
            upstream.close()


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, conns, mbytes = (50, 100, 50) if quick else (200, 400, 300)
    with private_guest():
        nl, ip = bench_netlink(rounds)
        print(f"endpoint plumbing ({rounds} rounds of create+enslave+up+address+delete):")
        print(
            f"  netlink {nl * 1e3:.3f} ms/round   ip(8) {ip * 1e3:.3f} ms/round   ip/netlink = {ip / nl:.1f}x"
        )
        nl, ip = bench_link_up(rounds * 4)
        print(f"one call (link set up, {rounds * 4}x):")
        print(
            f"  netlink {nl * 1e6:.0f} us/call   ip(8) {ip * 1e6:.0f} us/call   ip/netlink = {ip / nl:.0f}x"
        )
    res = {mode: bench_ports(mode, conns, mbytes) for mode in ("dnat", "proxy")}
    print(f"published TCP port, client -> 127.0.0.1:8080 ({conns} connects, {mbytes} MiB bulk):")
    for mode, r in res.items():
        lat, thr = r["published"]
        dlat, dthr = r["direct"]
        print(
            f"  {mode:5}  connect+rtt {lat * 1e6:8.0f} us  bulk {thr:8.0f} MiB/s"
            f"   (direct to container: {dlat * 1e6:.0f} us, {dthr:.0f} MiB/s)"
        )
    d, p = res["dnat"]["published"], res["proxy"]["published"]
    print(f"  proxy/dnat connect latency = {p[0] / d[0]:.2f}x   dnat/proxy throughput = {d[1] / p[1]:.2f}x")


if __name__ == "__main__":
    main()
