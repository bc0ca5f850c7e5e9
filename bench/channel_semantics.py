"""What the two ends of a virtio-serial port see of each other: connects, closes, half-close, a second client.

    python bench/channel_semantics.py

Boots the guest image with one port (as bench/channel_probe.py does), opens the port in the guest with
O_NONBLOCK in a small process driven line by line over SSH, and prints each step: what the host did, what the
guest's poll/read/write answered. docs/hostagent.md "A channel without TCP" quotes the outcome.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import channel_probe as probe  # noqa: E402
from support.guestboot import BootedGuest, boot_guest  # noqa: E402

GUEST_OPS = """
import os, select, sys
fd = None
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "open":
            fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK); out = "opened"
        elif cmd == "read":
            out = repr(os.read(fd, 4096))
        elif cmd == "poll":
            p = select.poll(); p.register(fd, select.POLLIN | select.POLLOUT)
            ev = p.poll(0)
            out = " ".join(n for n in ("POLLIN", "POLLOUT", "POLLHUP", "POLLERR")
                           if ev and ev[0][1] & getattr(select, n)) or "none"
        elif cmd == "write":
            out = f"wrote {os.write(fd, arg.encode())}"
        elif cmd == "close":
            os.close(fd); fd = None; out = "closed"
    except BlockingIOError:
        out = "EAGAIN"
    except OSError as e:
        out = f"error {e}"
    print(out, flush=True)
"""


def main() -> int:
    from pymachine.hostvm import image

    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    manifest = image.ensure_image()
    work = Path(tempfile.mkdtemp(prefix="chan-sem-"))
    sock_path = work / "chan.sock"
    extra = probe.serial_port_args(sock_path)
    try:
        boot = boot_guest(manifest, work / "vm", cpus=2, memory_mib=1024, boot_timeout=900, extra_args=extra)
        with boot as g:
            steps(g, sock_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def steps(g: BootedGuest, sock_path: Path) -> None:
    names = "/sys/class/virtio-ports/*/name"
    res = g.run(f"modprobe virtio_console && sleep 1 && grep -lx {probe.PORT_NAME} {names}")
    dev = "/dev/" + res.stdout.strip().split("/")[-2]
    print("host: " + g.run(f"ls -l {dev}").stdout.strip())
    print(f"host: QEMU's socket is mode {oct(os.stat(sock_path).st_mode & 0o777)}")
    stdin, stdout, _ = g.ssh().exec_command(f"python3 -c {shlex.quote(GUEST_OPS)} {dev}")

    def guest(*commands: str) -> None:
        """Run `commands` in the guest process one by one (after half a second: let QEMU pass things on)."""
        time.sleep(0.5)
        for command in commands:
            stdin.write(command + "\n")
            stdin.flush()
            print(f"  guest {command!r:26} -> {stdout.readline().strip()}")

    def recv(sock: socket.socket, who: str) -> None:
        try:
            print(f"host: {who} recv -> {sock.recv(100)!r}")
        except TimeoutError:
            print(f"host: {who} recv timed out (nothing, no EOF)")

    guest("open", "poll", "read", "write early")
    print("host: first client connects")
    first = socket.socket(socket.AF_UNIX)
    first.connect(str(sock_path))
    first.settimeout(2)
    guest("poll")
    first.sendall(b"abc")
    guest("poll", "read", "read")
    print("host: a second client connects while the first is connected, and sends")
    second = socket.socket(socket.AF_UNIX)
    second.connect(str(sock_path))
    second.settimeout(2)
    second.sendall(b"from-second")
    guest("read")
    print("host: the first client shuts down its write side")
    first.shutdown(socket.SHUT_WR)
    guest("poll", "read", "write after-shutdown")
    recv(first, "first")
    first.close()
    recv(second, "second")
    print("host: the guest writes and closes its fd")
    guest("write bye", "close")
    recv(second, "second")
    recv(second, "second")
    print("host: the second client sends while the guest has the port closed")
    second.sendall(b"while-closed")
    guest("open", "read")
    print("host: the second client closes")
    second.close()
    guest("poll", "read")


if __name__ == "__main__":
    sys.exit(main())
