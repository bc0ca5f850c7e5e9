"""passt in a network namespace of its own, and the host side's way into it (bench/passt_probe.py).

    python bench/passt_ns.py helper --ctl CTL --sock SOCK --ports SPEC   (run under `unshare -Urn`)
    python bench/passt_ns.py relay --ctl CTL --listen PORT --target GUEST_PORT

passt forwards the ports it was started with and has no run-time port API (this Debian 12 build,
0.0~git20230309), so a container's port published later can only be reached if passt forwards a whole range
from the start. Here passt runs in a user + network namespace that has nothing but its loopback and a veth
pair whose both ends stay inside: its listeners (`-t 127.0.0.1/SPEC`) are reachable by no process on the host,
and the guest's outbound connections (passt opens them as host sockets in its own namespace) find no way out.
The namespace's only door is CTL, a unix socket (a path: unix socket paths are not per network namespace,
abstract ones are): a client sends a guest port, the helper connects to passt's listener for it inside the
namespace and hands the connected socket back (SCM_RIGHTS). `relay` is the host agent's part: it listens on
the host's 127.0.0.1:PORT (the published port), takes such a socket per connection, and moves the bytes both
ways with splice(2) through a pipe, so no byte is copied through Python.

QEMU's end is `passt_nic_args(SOCK)`: `-netdev stream` to passt's socket (QEMU 7.2), one virtio-net NIC.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

GUEST_IP, GATEWAY, NS_IP = "10.0.3.15", "10.0.3.2", "10.0.3.3"
PREFIX = 24
MAC = "52:54:00:70:61:01"  # the guest finds the passt NIC by this address (no udev in the guest)
MTU = 65520  # passt's own default for its guests (the largest 802.3 frame minus its header, in 32-bit words)
CHUNK = 1 << 20
LISTEN = os.environ.get("PASST_LISTEN", "127.0.0.1")  # "" for any address (then reached at NS_IP)
EXTRA = os.environ.get("PASST_EXTRA", "").split()  # debugging: "-d -l LOG -p PCAP" (then without -q)
F_SETPIPE_SZ = 1031


def passt_nic_args(sock: Path, netdev: str = "net1") -> list[str]:
    """QEMU arguments for one virtio-net NIC whose back end is passt's unix socket."""
    return [
        "-netdev", f"stream,id={netdev},server=off,addr.type=unix,addr.path={sock}",
        "-device", f"virtio-net-pci,netdev={netdev},mac={MAC}",
    ]  # fmt: skip


def passt_argv(sock: Path, ports: str, pid_file: Path) -> list[str]:
    return [
        "passt", "-f", "-4", *([] if EXTRA else ["-q"]),
        "-s", str(sock), "-P", str(pid_file),
        "-t", f"{LISTEN}/{ports}" if LISTEN else ports, "-u", "none",
        "-a", GUEST_IP, "-n", str(PREFIX), "-g", GATEWAY,
        "-D", "none", "--no-dhcp-search",
        *EXTRA,
    ]  # fmt: skip


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def isolate() -> None:
    """Inside a fresh network namespace: lo up, a veth pair with both ends here (passt wants an interface
    with a default route to take its template from), low ports bindable by passt (the namespace's own
    sysctl)."""
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "pt0", "type", "veth", "peer", "name", "pt1")
    sh("ip", "link", "set", "pt0", "up")
    sh("ip", "link", "set", "pt1", "up")
    sh("ip", "addr", "add", f"{NS_IP}/{PREFIX}", "dev", "pt0")
    sh("ip", "route", "add", "default", "via", GATEWAY, "dev", "pt0")
    Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").write_text("0\n")


def helper(ctl: Path, sock: Path, ports: str) -> None:
    """Start passt here, then serve CTL. Prints `ready PASST_PID SECONDS FDS` (SECONDS: passt's start until
    its pid file, i.e. every listener bound) once passt is up, and `gone` to stderr when passt exits."""
    isolate()
    pid_file = sock.with_suffix(".pid")
    pid_file.unlink(missing_ok=True)
    sock.unlink(missing_ok=True)  # a passt before this one (restarted) may have left it
    start = time.perf_counter()
    passt = subprocess.Popen(passt_argv(sock, ports, pid_file), stderr=subprocess.DEVNULL)
    while not (pid_file.exists() and pid_file.read_text().strip()):
        if passt.poll() is not None:
            raise SystemExit(f"passt exited with {passt.returncode} (ports {ports})")
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    # From here on the guest's outbound connections fail at once (ENETUNREACH) instead of after an ARP timeout
    # on the veth; passt read its template interface at start and needs the route no more.
    sh("ip", "route", "replace", "unreachable", "default")
    fds = len(os.listdir(f"/proc/{passt.pid}/fd"))
    server = socket.socket(socket.AF_UNIX)
    ctl.unlink(missing_ok=True)
    server.bind(str(ctl))
    os.chmod(ctl, 0o600)
    server.listen(64)
    print(f"ready {passt.pid} {seconds:.4f} {fds}", flush=True)
    threading.Thread(target=_watch, args=(passt,), daemon=True).start()
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                port = int(conn.recv(16).decode())
                with socket.create_connection((LISTEN or NS_IP, port), timeout=10) as out:
                    socket.send_fds(conn, [b"ok"], [out.fileno()])
            except (OSError, ValueError) as exc:
                conn.sendall(f"error {exc}".encode())


def _watch(passt: subprocess.Popen[bytes]) -> None:
    passt.wait()
    print(f"gone: passt exited with {passt.returncode}", file=sys.stderr, flush=True)
    os._exit(1)


def connect(ctl: Path, port: int) -> socket.socket:
    """A socket connected to passt's listener for guest port `port`, from the namespace's helper."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(ctl))
        s.sendall(str(port).encode())
        msg, fds, _flags, _addr = socket.recv_fds(s, 256, 1)
    if msg != b"ok" or not fds:
        for fd in fds:
            os.close(fd)
        raise ConnectionError(f"the namespace helper could not connect to guest port {port}: {msg.decode()}")
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(True)  # the helper's timeout left O_NONBLOCK on the shared file: splice must block
    return sock


def splice_one_way(src: socket.socket, dst: socket.socket) -> None:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        while True:
            n = os.splice(src.fileno(), w, CHUNK)
            if not n:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n)
        dst.shutdown(socket.SHUT_WR)  # the half-close goes on, as with a kernel forward
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)


def relay(ctl: Path, listen_port: int, target: int) -> None:
    """The published port's host end: 127.0.0.1:listen_port → (splice) → passt → guest port `target`."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(128)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_pair, args=(ctl, client, target), daemon=True).start()


def _pair(ctl: Path, client: socket.socket, target: int) -> None:
    try:
        upstream = connect(ctl, target)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=splice_one_way, args=(upstream, client), daemon=True)
    back.start()
    splice_one_way(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("helper")
    h.add_argument("--ctl", type=Path, required=True)
    h.add_argument("--sock", type=Path, required=True)
    h.add_argument("--ports", required=True, help="passt's -t range, e.g. 1-15000")
    r = sub.add_parser("relay")
    r.add_argument("--ctl", type=Path, required=True)
    r.add_argument("--listen", type=int, required=True)
    r.add_argument("--target", type=int, required=True)
    args = parser.parse_args()
    if args.what == "helper":
        helper(args.ctl, args.sock, args.ports)
    else:
        relay(args.ctl, args.listen, args.target)


if __name__ == "__main__":
    main()
