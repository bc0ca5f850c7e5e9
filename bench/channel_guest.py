"""The guest's end of bench/channel_probe.py: one process (root, the guest's own Python, stdlib only) that
serves every channel the probe measures with one tiny protocol, and reports the guest CPU each transfer cost.

    python3 channel_guest.py /dev/vportNpM [UPLINK...]    (or - for no virtio-serial port; UPLINK: eth0)

Protocol, on every channel: the host sends OP (1 byte) and SIZE (8 bytes, big-endian), then
    S  the host sends SIZE bytes, the guest reads and drops them;
    G  the guest sends SIZE bytes (zeros), the host reads them;
    R  (virtio-serial only) like S, but a relay here reads the port and sends the bytes on over TCP to the
       server in the separate network namespace (op S there): the engine's shape, a container behind a veth;
    r  (virtio-serial only) like G, the relay fetching them from the netns server (op G there) and moving them
       to the port with splice(2) (socket → pipe → port: virtio_console has splice_write);
and after the data the guest sends its report: 4-byte length, JSON (bytes, the guest's busy CPU seconds over
the transfer from /proc/stat, both vCPUs, and the serving thread's own CPU seconds).

Listeners: TCP 0.0.0.0:TCP_PORT (reached by QEMU hostfwd and ssh -L), TCP NS_IP:NS_PORT inside the network
namespace NETNS (a veth pair; DNAT_PORT on the uplink is DNATed there, as the engine publishes a port), and
the virtio-serial port (one stream, ops one after another; read returns 0 while the host end is not
connected).
Prints "ready" on stdout once all listen.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

TCP_PORT = 9555
NETNS = "chanprobe"
NS_IP, NS_PORT, DNAT_PORT = "10.99.0.2", 9556, 9557
CHUNK = 1 << 20
BATCH = 256 << 10  # the relay's largest send
HEADER = struct.Struct("!cQ")
CLONE_NEWNET = 0x40000000
F_SETPIPE_SZ = 1031
TICK = os.sysconf("SC_CLK_TCK")
ZEROS = memoryview(bytes(CHUNK))


def busy_ticks() -> int:
    """Jiffies the guest's vCPUs spent outside idle and iowait, all CPUs (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


class Meter:
    """The guest's busy CPU and this thread's CPU between start and report()."""

    def __init__(self) -> None:
        self.ticks, self.thread, self.wall = busy_ticks(), time.thread_time(), time.monotonic()

    def report(self, size: int, **extra: object) -> dict:
        return {
            "bytes": size,
            "guest_busy_s": (busy_ticks() - self.ticks) / TICK,
            "thread_cpu_s": time.thread_time() - self.thread,
            "guest_wall_s": time.monotonic() - self.wall,
            **extra,
        }


def read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = os.read(fd, n - len(out))
        if not got:
            raise EOFError
        out += got
    return out


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def send_report(fd: int, report: dict) -> None:
    body = json.dumps(report).encode()
    write_all(fd, struct.pack("!I", len(body)) + body)


def read_report(fd: int) -> dict:
    (length,) = struct.unpack("!I", read_exact(fd, 4))
    return json.loads(read_exact(fd, length))


def drain(fd: int, size: int) -> int:
    """Read and drop `size` bytes with large reads into one buffer; the number of reads it took."""
    buf = memoryview(bytearray(CHUNK))
    left, reads = size, 0
    while left:
        n = os.readv(fd, [buf[: min(left, CHUNK)]])
        if not n:
            raise EOFError(f"{size - left} of {size} bytes")
        left -= n
        reads += 1
    return reads


def produce(fd: int, size: int) -> None:
    left = size
    while left:
        left -= os.write(fd, ZEROS[: min(left, CHUNK)])


def serve_op(fd: int, op: bytes, size: int) -> None:
    """S or G on `fd`, then the report."""
    meter = Meter()
    if op == b"S":
        reads = drain(fd, size)
        send_report(fd, meter.report(size, reads=reads))
    elif op == b"G":
        produce(fd, size)
        send_report(fd, meter.report(size))
    else:
        raise ValueError(f"unknown op {op!r}")


def relay_in(port: int, size: int) -> dict:
    """R: port → TCP to the netns server. virtio_console has no splice_read and a read returns one guest
    buffer (a page), so the relay drains what is there without blocking (up to BATCH) and sends that at once:
    one 4 KiB send per read cost 2-3× the CPU in TCP segments to the veth."""
    meter = Meter()
    flags = fcntl.fcntl(port, fcntl.F_GETFL)
    poller = select.poll()
    poller.register(port, select.POLLIN)
    buf = memoryview(bytearray(CHUNK))
    left, reads, sends = size, 0, 0
    with socket.create_connection((NS_IP, NS_PORT)) as sock:
        sock.sendall(HEADER.pack(b"S", size))
        fcntl.fcntl(port, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            while left:
                filled, want = 0, min(left, BATCH)
                while filled < want:
                    try:
                        n = os.readv(port, [buf[filled:want]])
                    except BlockingIOError:
                        if filled:
                            break
                        poller.poll()
                        continue
                    if not n:
                        raise EOFError
                    filled += n
                    reads += 1
                sock.sendall(buf[:filled])
                left -= filled
                sends += 1
        finally:
            fcntl.fcntl(port, fcntl.F_SETFL, flags)
        far = read_report(sock.fileno())
    return meter.report(size, reads=reads, sends=sends, sink=far)


def relay_out(port: int, size: int) -> dict:
    """r: TCP from the netns server → port, by splice through a pipe (no copy through user space)."""
    meter = Meter()
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        with socket.create_connection((NS_IP, NS_PORT)) as sock:
            sock.sendall(HEADER.pack(b"G", size))
            left, splices = size, 0
            while left:
                n = os.splice(sock.fileno(), w, min(left, CHUNK))
                if not n:
                    raise EOFError
                left -= n
                while n:
                    n -= os.splice(r, port, n)
                    splices += 1
            far = read_report(sock.fileno())
    finally:
        os.close(r)
        os.close(w)
    return meter.report(size, splices=splices, source=far)


def serve_port(path: str) -> None:
    port = os.open(path, os.O_RDWR)
    while True:
        try:
            op, size = HEADER.unpack(read_exact(port, HEADER.size))
        except EOFError:  # the host end is not connected: read returns 0 until it is
            time.sleep(0.05)
            continue
        if op == b"R":
            send_report(port, relay_in(port, size))
        elif op == b"r":
            send_report(port, relay_out(port, size))
        else:
            serve_op(port, op, size)


def serve_tcp(listener: socket.socket) -> None:
    """Each connection on its own thread: one that a save/restore left dead in the guest (passt_probe.py)
    must not keep the next one waiting."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def serve_conn(conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                try:
                    op, size = HEADER.unpack(read_exact(conn.fileno(), HEADER.size))
                except EOFError:
                    break
                serve_op(conn.fileno(), op, size)
        except OSError as e:
            print(f"tcp: {e}", file=sys.stderr, flush=True)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def make_netns(uplinks: list[str]) -> None:
    """A network namespace behind a veth pair, and the uplinks' DNAT_PORT DNATed into it (as the engine does
    for a published port: nat.py's prerouting rule, here without the bridge). bench/passt_probe.py adds the
    passt NIC as a second uplink."""
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "link", "del", "cp0"], capture_output=True)
    sh("ip", "netns", "add", NETNS)
    sh("ip", "link", "add", "cp0", "type", "veth", "peer", "name", "cp1")
    sh("ip", "link", "set", "cp1", "netns", NETNS)
    sh("ip", "addr", "add", "10.99.0.1/24", "dev", "cp0")
    sh("ip", "link", "set", "cp0", "up")
    sh("ip", "-n", NETNS, "addr", "add", f"{NS_IP}/24", "dev", "cp1")
    sh("ip", "-n", NETNS, "link", "set", "cp1", "up")
    sh("ip", "-n", NETNS, "link", "set", "lo", "up")
    sh("ip", "-n", NETNS, "route", "add", "default", "via", "10.99.0.1")
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    names = ", ".join(f'"{name}"' for name in uplinks)
    rules = (
        "table ip chanprobe\ndelete table ip chanprobe\ntable ip chanprobe {\n"
        "  chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
        f"    iifname {{ {names} }} tcp dport {DNAT_PORT} dnat to {NS_IP}:{NS_PORT}\n  }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)


def listen_in_netns() -> socket.socket:
    """A listener created inside NETNS (a socket keeps the namespace it was made in; setns is per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{NETNS}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            return listen(NS_IP, NS_PORT)
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def listen(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    return s


def main() -> None:
    port, uplinks = sys.argv[1], sys.argv[2:] or ["eth0"]
    make_netns(uplinks)
    threads = [
        threading.Thread(target=serve_tcp, args=(listen("0.0.0.0", TCP_PORT),), daemon=True),
        threading.Thread(target=serve_tcp, args=(listen_in_netns(),), daemon=True),
    ]
    if port != "-":
        threads.append(threading.Thread(target=serve_port, args=(port,), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the host closes the SSH channel


if __name__ == "__main__":
    main()
