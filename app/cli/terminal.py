"""Joining this terminal to a container's hijacked attach/exec stream: raw mode with -t, docker's frame
demux without it, and the terminal's size sent at start and on every resize (SIGWINCH), as `docker` does."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pymachine.hostvm.images_io import demux

Resize = Callable[[int, int], None]  # (rows, columns)


def size() -> tuple[int, int] | None:
    """(rows, columns) of the terminal on stdin (else stdout), None when neither is one."""
    for fd in (0, 1):
        if os.isatty(fd):
            try:
                cols, rows = os.get_terminal_size(fd)
            except OSError:
                continue
            if rows and cols:
                return rows, cols
    return None


@contextlib.contextmanager
def _raw(enabled: bool) -> Iterator[None]:
    if not (enabled and sys.stdin.isatty()):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin.fileno())
    # TCSANOW, not setraw's default TCSAFLUSH: what was typed while the container was being made (`exit`, a
    # command) goes to it, as docker's attach does, instead of being thrown away
    tty.setraw(sys.stdin.fileno(), termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _winch_pipe(active: bool) -> Iterator[int | None]:
    """A pipe that gets a byte on each SIGWINCH, so the select loop (not the signal handler) sends the
    resize: the handler must not run HTTP in the middle of whatever the main thread does."""
    if not active:
        yield None
        return
    r, w = os.pipe()
    os.set_blocking(w, False)

    def on_winch(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(w, b"w")

    old = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield r
    finally:
        signal.signal(signal.SIGWINCH, old)
        os.close(r)
        os.close(w)


def _send_size(resize: Resize | None) -> None:
    found = size()
    if resize is not None and found is not None:
        with contextlib.suppress(Exception):  # a resize that races the process's exit is not an error
            resize(*found)


def pump(sock: Any, tty: bool, interactive: bool, resize: Resize | None = None) -> None:
    """Copy the stream to stdout/stderr and stdin to the stream until the container side closes."""
    raw = getattr(sock, "_sock", sock)
    track = tty and resize is not None and size() is not None
    with _raw(tty), _winch_pipe(track) as winch:
        if track:
            _send_size(resize)  # the engine had ConsoleSize already; this covers a resize since
        buf = b""
        stdin = sys.stdin.fileno()
        inputs: list[Any] = [raw] + ([stdin] if interactive else []) + ([winch] if winch is not None else [])
        while True:
            ready, _, _ = select.select(inputs, [], [])
            if winch is not None and winch in ready:
                os.read(winch, 1024)
                _send_size(resize)
            if raw in ready:
                data = raw.recv(65536)
                if not data:
                    break
                if tty:
                    os.write(1, data)
                else:
                    frames, buf = demux(buf + data)
                    for stream, payload in frames:
                        os.write(2 if stream == 2 else 1, payload)
            if interactive and stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    inputs.remove(stdin)
                    with contextlib.suppress(OSError):
                        raw.shutdown(socket.SHUT_WR)
                else:
                    raw.sendall(data)
