"""A host↔guest channel without TCP on the host: virtio-serial against QEMU's user network, in one run.

    python bench/channel_probe.py [--mib 200] [--repeat 3] [--json out.json]

Boots the guest image with plain QEMU (tests/support/guestboot.py: slirp with restrict=on, as the machines)
plus one virtio-serial port whose host end is a unix socket QEMU listens on (libvirt's
`<channel type='unix'><target type='virtio' name=.../>` is the same device). bench/channel_guest.py serves
every channel in the guest with one protocol (S: the host sends SIZE bytes, G: the guest sends them) and
reports the guest's CPU per transfer. Rows, in alternating rounds, --mib MiB each, medians of --repeat:

host → guest                                      guest → host (docker save's direction)
  ssh -L → a guest process                          the same, back
  QEMU hostfwd → a guest process                    the same, back
  virtio-serial → a guest process                   the same, back
  hostfwd → DNAT → a process in a netns (veth)      the same, back (a published port's shape)
  virtio-serial → a Python relay → TCP → netns      netns → TCP → relay (splice) → virtio-serial

Per row: MB/s, the ratio to `ssh -L` in the same direction, the guest's busy CPU per MiB (/proc/stat, both
vCPUs), the serving thread's own CPU per MiB, and QEMU's CPU per MiB (all threads, and its main loop alone:
slirp and the chardev run there). docs/hostagent.md "A channel without TCP" has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import channel_guest as wire  # noqa: E402
from support.guestboot import BootedGuest, boot_guest, free_port  # noqa: E402

PORT_NAME = "org.pymachine.probe"
CHUNK = 1 << 20
HZ = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Row:
    label: str
    direction: str  # "in" (host → guest) or "out"
    channel: str  # "port" or a TCP peer: "ssh", "fwd", "dnat"
    op: bytes


ROWS = (
    Row("ssh -L → guest process", "in", "ssh", b"S"),
    Row("hostfwd → guest process", "in", "fwd", b"S"),
    Row("virtio-serial → guest process", "in", "port", b"S"),
    Row("hostfwd → DNAT → netns", "in", "dnat", b"S"),
    Row("virtio-serial → relay → netns", "in", "port", b"R"),
    Row("ssh -L ← guest process", "out", "ssh", b"G"),
    Row("hostfwd ← guest process", "out", "fwd", b"G"),
    Row("virtio-serial ← guest process", "out", "port", b"G"),
    Row("hostfwd ← DNAT ← netns", "out", "dnat", b"G"),
    Row("virtio-serial ← relay ← netns", "out", "port", b"r"),
)


def qemu_cpu(pid: int) -> tuple[float, float]:
    """QEMU's CPU seconds so far: all threads, and the main loop's thread (slirp, chardevs) alone."""
    total = main = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a worker thread that just ended
        seconds = (int(fields[11]) + int(fields[12])) / HZ
        total += seconds
        if int(tid) == pid:
            main = seconds
    return total, main


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise EOFError(f"{len(out)} of {n} bytes")
        out += got
    return bytes(out)


def transfer(sock: socket.socket, op: bytes, size: int) -> tuple[float, dict]:
    """One transfer on a connected channel: seconds from the header to the last data byte (for S: to the
    guest's report, which proves it read them all), and that report."""
    start = time.perf_counter()
    sock.sendall(wire.HEADER.pack(op, size))
    if op in (b"S", b"R"):
        block = bytes(CHUNK)
        left = size
        while left:
            n = min(left, CHUNK)
            sock.sendall(block[:n] if n < CHUNK else block)
            left -= n
        (length,) = struct.unpack("!I", recv_exact(sock, 4))  # the guest's report proves it read them all
        elapsed = time.perf_counter() - start
    else:
        buf = memoryview(bytearray(CHUNK))
        left = size
        while left:
            n = sock.recv_into(buf[: min(left, CHUNK)])
            if not n:
                raise EOFError(f"{size - left} of {size} bytes")
            left -= n
        elapsed = time.perf_counter() - start
        (length,) = struct.unpack("!I", recv_exact(sock, 4))
    report = json.loads(recv_exact(sock, length))
    if report["bytes"] != size:
        raise RuntimeError(f"the guest counted {report['bytes']}, not {size}")
    return elapsed, report


def connect_tcp(port: int, timeout: float = 60) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=600)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def hmp(guest: BootedGuest, command: str) -> str:
    from pymachine.hostvm.drivers.qemu import qmp_command

    qmp = guest.console_log.parent / "qmp.sock"
    return str(qmp_command(qmp, "human-monitor-command", {"command-line": command}))


def start_guest_end(guest: BootedGuest) -> tuple[object, str]:
    """Load virtio_console, find the port's device node by its name, start channel_guest.py on it."""
    find = (
        "modprobe virtio_console && for i in $(seq 100); do "
        f"p=$(grep -lx {PORT_NAME} /sys/class/virtio-ports/*/name 2>/dev/null) && "
        "d=/dev/$(basename $(dirname $p)) && [ -c $d ] && echo $d && exit 0; sleep 0.1; done; exit 1"
    )
    res = guest.run(find)
    if res.status != 0:
        raise RuntimeError(f"no virtio-serial port {PORT_NAME} in the guest: {res.stderr}")
    dev = res.stdout.strip()
    sftp = guest.ssh().open_sftp()
    sftp.put(str(HERE / "channel_guest.py"), "/root/channel_guest.py")
    sftp.close()
    stdin, stdout, stderr = guest.ssh().exec_command(f"python3 /root/channel_guest.py {dev}")
    line = stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"channel_guest.py did not start: {line!r} {stderr.read().decode()[-2000:]}")
    return stdin, dev


def ssh_tunnel(guest: BootedGuest, workdir: Path, local: int) -> subprocess.Popen[bytes]:
    key, known = workdir / "id", workdir / "known_hosts"
    key.write_bytes(guest.client.private_openssh)
    key.chmod(0o600)
    known.write_text(f"[127.0.0.1]:{guest.ssh_port} {' '.join(guest.host.public_line.split()[:2])}\n")
    argv = [
        "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(guest.ssh_port),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
        "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
        "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{wire.TCP_PORT}", "root@127.0.0.1",
    ]  # fmt: skip
    return subprocess.Popen(argv)


def serial_port_args(sock_path: Path) -> list[str]:
    """QEMU arguments for one virtio-serial port named PORT_NAME, its host end a socket QEMU listens on."""
    return [
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=chan0,path={sock_path},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=chan0,name={PORT_NAME}",
    ]  # fmt: skip


def measure(mib: int, repeat: int, out: Path | None) -> None:
    from pymachine.hostvm import image

    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    manifest = image.ensure_image()
    size = mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="chan-"))
    chan_sock = work / "chan.sock"
    extra = serial_port_args(chan_sock)
    try:
        boot = boot_guest(manifest, work / "vm", cpus=2, memory_mib=1024, boot_timeout=900, extra_args=extra)
        with boot as g:
            keep, dev = start_guest_end(g)
            ports = {"fwd": free_port(), "dnat": free_port(), "ssh": free_port()}
            hmp(g, f"hostfwd_add net0 tcp:127.0.0.1:{ports['fwd']}-:{wire.TCP_PORT}")
            hmp(g, f"hostfwd_add net0 tcp:127.0.0.1:{ports['dnat']}-:{wire.DNAT_PORT}")
            tunnel = ssh_tunnel(g, work, ports["ssh"])
            port_sock = socket.socket(socket.AF_UNIX)
            port_sock.connect(str(chan_sock))
            try:
                results = run_rounds(g.process.pid, ports, port_sock, size, repeat, out)
            finally:
                port_sock.close()
                tunnel.terminate()
                tunnel.wait(10)
                keep.close()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the overlay, the sockets
    report(results, mib, repeat, dev)


def run_rounds(
    qemu_pid: int, ports: dict[str, int], port_sock: socket.socket, size: int, repeat: int, out: Path | None
) -> dict[str, list[dict]]:
    def once(row: Row, nbytes: int) -> dict:
        q0, l0 = qemu_cpu(qemu_pid), os.getloadavg()[0]
        if row.channel == "port":
            seconds, got = transfer(port_sock, row.op, nbytes)
        else:
            with connect_tcp(ports[row.channel]) as sock:
                seconds, got = transfer(sock, row.op, nbytes)
        q1 = qemu_cpu(qemu_pid)
        return {
            "mbps": nbytes / seconds / 1e6,
            "seconds": seconds,
            "qemu_cpu_s": q1[0] - q0[0],
            "qemu_main_s": q1[1] - q0[1],
            "load": l0,
            **got,
        }

    # warm: the ssh -L channel machinery, the guest's page cache for the script, the relays
    return alternating_rounds(ROWS, once, size, repeat, out)


def alternating_rounds(
    rows: tuple[Row, ...], once: Callable[[Row, int], dict], size: int, repeat: int, out: Path | None
) -> dict[str, list[dict]]:
    """Each row once with 1 MiB to warm up, then `repeat` rounds of `size` bytes, every other round in reverse
    order (whatever follows a long slow transfer comes out slower); written to `out` as it goes."""
    for row in rows:
        once(row, 1 << 20)
    results: dict[str, list[dict]] = {row.label: [] for row in rows}
    for r in range(repeat):
        for row in rows if r % 2 == 0 else rows[::-1]:
            results[row.label].append(got := once(row, size))
            print(
                f"round {r + 1} {row.label:<34} {got['mbps']:7.1f} MB/s  load {got['load']:.1f}",
                file=sys.stderr,
            )
            if out:  # as it goes: a run cut short keeps its rounds
                out.write_text(json.dumps(results, indent=1))
    return results


def report(results: dict[str, list[dict]], mib: int, repeat: int, dev: str) -> None:
    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    def inner(r: dict) -> float:  # the far end's thread behind a relay (netns sink or source)
        return (r.get("sink") or r.get("source") or {}).get("thread_cpu_s", 0.0)

    loads = [r["load"] for rows in results.values() for r in rows]
    print(f"\n{mib} MiB per transfer, median of {repeat}, guest port {dev}; host load average"
          f" {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'':<32} {'MB/s':>7} {'× ssh -L':>8}   ms of CPU per MiB: {'guest':>6} {'thread':>6}"
        f" {'relay':>6} {'QEMU':>6} {'(main)':>6}"
    )

    def cpu(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000 / mib:6.1f}"

    for row in ROWS:
        rs = results[row.label]
        ssh_label = "ssh -L → guest process" if row.direction == "in" else "ssh -L ← guest process"
        speed = med(row.label, "mbps")

        relay = "" if row.op in (b"S", b"G") else cpu([r["thread_cpu_s"] for r in rs])
        thread = cpu([inner(r) for r in rs]) if relay else cpu([r["thread_cpu_s"] for r in rs])
        print(
            f"{row.label:<32} {speed:7.1f} {speed / med(ssh_label, 'mbps'):7.2f}×"
            f"   {'':<18} {cpu([r['guest_busy_s'] for r in rs])} {thread} {relay:>6}"
            f" {cpu([r['qemu_cpu_s'] for r in rs])} {cpu([r['qemu_main_s'] for r in rs])}"
        )
    pairs = [
        ("virtio-serial → guest process", "hostfwd → guest process"),
        ("virtio-serial → relay → netns", "hostfwd → DNAT → netns"),
        ("virtio-serial ← guest process", "hostfwd ← guest process"),
        ("virtio-serial ← relay ← netns", "hostfwd ← DNAT ← netns"),
    ]
    for a, b in pairs:
        print(f"  {a} / {b}: {med(a, 'mbps') / med(b, 'mbps'):.2f}×")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every transfer's numbers here")
    args = parser.parse_args()
    measure(args.mib, args.repeat, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
