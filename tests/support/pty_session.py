"""A command on a real pseudo-terminal of a given size, with a script that may resize it or type, polled."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time
from collections.abc import Callable


def winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def pty_session(
    argv: list[str], env: dict[str, str], rows: int, cols: int, script: Callable[[int, bytes], bytes | None]
) -> tuple[int, bytes]:
    """Run argv on a pty of rows x cols; `script(master, output so far)` may act (resize, type) and returns
    the bytes to type, if any. Returns (exit code, all output)."""
    pid, fd = pty.fork()
    if pid == 0:
        winsize(0, rows, cols)
        os.execvpe(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        typed = script(fd, out)
        if typed:
            os.write(fd, typed)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


class Resizer:
    """A second after the container printed its first size, resize this terminal (the kernel sends SIGWINCH
    to the client on it); again to another size every 3 s until the container reports a change. The docker
    CLI watches SIGWINCH only from a moment after its first resize call, so one early signal may be lost
    there; the outcome is polled, never timed. `sizes` holds every size set."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.sizes: list[bytes] = []
        self.last = 0.0

    def __call__(self, fd: int, out: bytes) -> bytes | None:
        if b"ready" not in out or b"second=" in out:
            return None
        now = time.monotonic()
        if not self.last:
            self.last = now - 2.0  # first resize one second after "ready"
        if now - self.last > 3.0:
            rows, cols = self.rows + len(self.sizes), self.cols + len(self.sizes)
            winsize(fd, rows, cols)
            self.sizes.append(f"second={rows} {cols}".encode())
            self.last = now
        return None
