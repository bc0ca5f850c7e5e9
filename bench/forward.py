"""Forwarding throughput and engine-socket latency, against peers measured in the same run.

    python bench/forward.py                    # boots a throwaway machine (direct-QEMU driver)
    python bench/forward.py --machine NAME     # a running machine of this PYMACHINE_HOME

1. 200 MiB host→guest into one guest process (a sink on 0.0.0.0:GP that counts and answers with the count),
   and the connect latency (connect, one byte, the sink's answer: p50/p99 over --connects new connections):
   (a) ours, QEMU path: the host agent's Forwarder with the machine's monitor (hostfwd_add, qemufwd.py):
       what a published TCP port of a local machine uses,
   (b) ours, SSH path: the Forwarder without it (direct-tcpip over paramiko, pump threads): remote machines,
       UDP, a monitor that is unavailable,
   (c) OpenSSH `ssh -N -L` with the same key and pin,
   (d) QEMU's own hostfwd added by hand (raw: the ceiling).
   Goals (issue 17): (a) ≥ 3× (c) and ≥ 0.9× (d).
2. `GET /containers/json` latency through the host socket, a new connection per request as docker clients
   do: ours (`<machine>/docker.sock`, direct-streamlocal) vs OpenSSH `-L host.sock:/run/pymachine/...`.
3. Opening one channel to the guest socket: direct-streamlocal vs the exec bridge (why direct is the default).

Prints MB/s and ratios (ours / peer).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SIZE = 200 * 1024 * 1024
SINK_PORT = 9555
SINK = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {SINK_PORT})); s.listen(8)\n"
    "while True:\n"
    "    c, _ = s.accept(); n = 0\n"
    "    while True:\n"
    "        d = c.recv(1 << 20)\n"
    "        if not d: break\n"
    "        n += len(d)\n"
    "    c.sendall(str(n).encode()); c.close()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push(port: int, size: int = SIZE) -> float:
    """Send `size` bytes to 127.0.0.1:port, wait for the sink's count; MB/s."""
    block = b"\0" * (1 << 20)
    deadline = time.monotonic() + 30
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=600)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with sock:
        start = time.perf_counter()
        sent = 0
        while sent < size:
            sock.sendall(block)
            sent += len(block)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(64)
        elapsed = time.perf_counter() - start
    if int(answer or 0) != size:
        raise RuntimeError(f"the sink counted {answer!r}, not {size}")
    return size / elapsed / 1e6


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix_path)


def latencies(sock_path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        conn = UnixHTTP(sock_path)
        conn.request("GET", "/v1.44/containers/json")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET /containers/json: {resp.status}")
        out.append(time.perf_counter() - start)
    return out


def engine_socket_path(name: str, timeout: float = 60) -> str:
    """Which path the machine's docker.sock takes (ssh, fast, serial), once the fast path had its chance to
    arm after the link-up (docs/hostagent.md "The engine socket's fast path"): the latency rows say what
    they measured."""
    from pymachine.hostvm import paths
    from pymachine.hostvm.hostagent import control

    deadline = time.monotonic() + timeout
    while True:
        answer = control.call(paths.machine(name).control_socket, "engine-path", timeout=60)
        if answer["engine_path"]["state"] in ("up", "off", "unsupported") or time.monotonic() > deadline:
            return str(answer.get("via"))
        time.sleep(0.5)


def round_trip(port: int) -> float:
    """A new connection, one byte, the sink's answer (b"1"): seconds. QEMU accepts on the host before the
    guest does, so connect() alone would flatter the QEMU paths: the answer proves the guest end."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"x")
        sock.shutdown(socket.SHUT_WR)
        if sock.recv(16) != b"1":
            raise RuntimeError(f"the sink on port {port} did not count one byte")
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_socket(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)


def run(name: str, repeat: int, requests: int, connects: int) -> None:
    from pymachine.hostvm import machines, ssh
    from pymachine.hostvm.hostagent import qemufwd, streamlocal
    from pymachine.hostvm.hostagent.daemon import machine_connect
    from pymachine.hostvm.hostagent.portforward import Forwarder
    from pymachine.hostvm.hostagent.ports import PortRule
    from pymachine.hostvm.hostagent.transport import Link

    m = machines.get(name)
    drv = machines.driver_for(machines.load_config(name))
    client = ssh.connect(name)
    client.exec_command(f'setsid python3 -c "{SINK}" >/dev/null 2>&1 </dev/null &')
    time.sleep(1.0)

    link = Link(machine_connect(name))
    link.start()
    link.get(timeout=60)
    fwd_ssh, fwd_qemu = Forwarder(link), Forwarder(link)
    fwd_qemu.qemu = qemufwd.machine_forwards(name)
    ssh_path_port, qemu_path_port = free_port(), free_port()
    fwd_ssh.open(PortRule("tcp", "127.0.0.1", ssh_path_port, SINK_PORT, "bench"))
    fwd_qemu.open(PortRule("tcp", "127.0.0.1", qemu_path_port, SINK_PORT, "bench"))
    qemu_path = fwd_qemu.snapshot()[0]["path"] == "qemu"

    ssh_port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="pmb"))
    ssh_sock = tmp / "docker.sock"
    base = ssh.ssh_argv(name, ["true"])[:-3]  # the pinned options, without the command
    at = base.index("ClearAllForwardings=yes")  # ssh_argv refuses forwards for logins; the tunnel needs them
    del base[at - 1 : at + 1]
    tunnel = subprocess.Popen(
        [
            *base,
            "-N",
            "-o",
            "StreamLocalBindUnlink=yes",
            "-L",
            f"127.0.0.1:{ssh_port}:127.0.0.1:{SINK_PORT}",
            "-L",
            f"{ssh_sock}:/run/pymachine/docker.sock",
            f"{ssh.USER}@{ssh.HOST}",
        ]
    )
    hostfwd_port = free_port() if drv.capabilities.hostfwd_add else None
    if hostfwd_port:
        drv.hostfwd_add(name, hostfwd_port, SINK_PORT)
    try:
        wait_socket(ssh_sock)
        mib = SIZE // 2**20
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine {name}: {m.cpus} vCPU, {m.accelerator}; {mib} MiB host→guest, median of {repeat}")
        print(f"host load average {load} on {os.cpu_count()} CPUs (peers share it: compare ratios, not MB/s)")
        rows = {"ours, SSH path": ssh_path_port, "OpenSSH ssh -L": ssh_port}
        if qemu_path:
            rows = {"ours, QEMU path": qemu_path_port, **rows}
        else:
            print("  (no QEMU path: the monitor is unavailable or PYMACHINE_PORT_PATH=ssh)")
        if hostfwd_port:
            rows["QEMU hostfwd (raw)"] = hostfwd_port
        # the median of the pushes: on a shared, loaded host a single push is mostly noise
        # rounds over every path (not all of one path's pushes in a row): what runs before a push (the SSH
        # paths leave the guest's sshd busy for a while) then weighs on each path alike
        pushes: dict[str, list[float]] = {label: [] for label in rows}
        for _ in range(repeat):
            for label, port in rows.items():
                pushes[label].append(push(port, SIZE))
        speed = {label: statistics.median(values) for label, values in pushes.items()}
        for port in rows.values():
            round_trip(port)  # warm: the SSH paths open their channel machinery once
        trips: dict[str, list[float]] = {label: [] for label in rows}
        for _ in range(connects):  # in rounds too
            for label, port in rows.items():
                trips[label].append(round_trip(port))
        print(f"  {'':<22} {'MB/s':>8}   connect+1 byte, {connects} new connections: p50 / p99")
        for label, mbs in speed.items():
            t = trips[label]
            print(f"  {label:<22} {mbs:8.1f}   {pct(t, 0.5) * 1e3:7.2f} ms / {pct(t, 0.99) * 1e3:7.2f} ms")
        pairs = [
            ("ours, QEMU path", "OpenSSH ssh -L"),
            ("ours, QEMU path", "QEMU hostfwd (raw)"),
            ("ours, QEMU path", "ours, SSH path"),
            ("ours, SSH path", "OpenSSH ssh -L"),
        ]
        for a, b in [(a, b) for a, b in pairs if a in rows and b in rows]:
            ratio, lat = speed[a] / speed[b], pct(trips[b], 0.5) / pct(trips[a], 0.5)
            print(f"  {a} / {b:<20} throughput {ratio:5.2f}x   p50 latency {lat:5.2f}x as fast")

        agent_sock = str(machines.paths.machine(name).docker_socket)
        via = engine_socket_path(name)
        latencies(agent_sock, 3)
        latencies(str(ssh_sock), 3)  # warm both
        a, b = [], []
        for _ in range(requests):  # in rounds, as the pushes: a load spike then weighs on both alike
            a += latencies(agent_sock, 1)
            b += latencies(str(ssh_sock), 1)
        print(f"GET /containers/json, {requests} requests, a new connection each (docker.sock takes: {via}):")
        for label, values in (("ours  (docker.sock)", a), ("OpenSSH -L (unix socket)", b)):
            p50, p95 = pct(values, 0.5) * 1e3, pct(values, 0.95) * 1e3
            print(f"  {label:<28} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
        print(f"  ratio p50 ssh / ours         {pct(b, 0.5) / pct(a, 0.5):.2f}x (above 1: ours is faster)")

        t = link.get()
        opens: dict[str, list[float]] = {"direct-streamlocal": [], "exec bridge": []}
        for _ in range(max(5, requests // 5)):
            for mode, opener in (
                ("direct-streamlocal", streamlocal.open_direct),
                ("exec bridge", streamlocal.open_exec_bridge),
            ):
                start = time.perf_counter()
                chan = opener(t, "/run/pymachine/docker.sock")
                chan.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                while chan.recv(4096):
                    pass
                chan.close()
                opens[mode].append(time.perf_counter() - start)
        d, e = statistics.median(opens["direct-streamlocal"]), statistics.median(opens["exec bridge"])
        print("open a channel to the guest socket + GET /_ping (median):")
        print(f"  direct-streamlocal {d * 1e3:7.1f} ms   exec bridge {e * 1e3:7.1f} ms   ratio {e / d:.1f}x")
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        fwd_ssh.close_all()
        fwd_qemu.close_all()
        if hostfwd_port:
            drv.monitor_command(name, f"hostfwd_remove net0 tcp:127.0.0.1:{hostfwd_port}")
        link.stop()
        client.exec_command(f"pkill -f 'bind..0.0.0.0., {SINK_PORT}'")
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", help="a running machine (default: boot a throwaway one)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--connects", type=int, default=100)
    parser.add_argument("--mib", type=int, default=200, help="MiB per push (the issue's figure: 200)")
    args = parser.parse_args()
    global SIZE
    SIZE = args.mib * 1024 * 1024
    with throwaway_machine(args.machine) as name:
        run(name, args.repeat, args.requests, args.connects)
    return 0


@contextlib.contextmanager
def throwaway_machine(name: str | None) -> Iterator[str]:
    """`name` when given (a running machine of this PYMACHINE_HOME), else a machine `bench` created and
    started (direct-QEMU driver) in a temporary home, deleted afterwards."""
    if name:
        yield name
        return
    home = Path(tempfile.mkdtemp(prefix="pmbench"))
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    from pymachine.hostvm import machines

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    machines.create("bench", driver="qemu", progress=say)
    try:
        machines.start("bench", say)
        yield "bench"
    finally:
        machines.delete("bench", force=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
