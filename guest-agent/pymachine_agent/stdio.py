"""Adapters from the runtime's attach streams and exec processes to what the API pumps: `read()` gives
bytes already in Docker's wire form (stdcopy frames without a TTY, raw with one), `write_stdin`,
`close_stdin` (the client's half-close), `close` (detach)."""

from __future__ import annotations

import os
import selectors
import struct
import threading
from collections.abc import Callable
from typing import Any

from . import detachkeys


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class Detached(Exception):
    """The client typed its detach keys: end its attach, leave the container (and its stdin) running."""


class AttachSession:
    """Wraps runtime.attach.AttachStream (which already frames output as the API sends it). With a TTY,
    stdin is watched for the detach keys (detachkeys.py), as dockerd does."""

    def __init__(
        self, raw: Any, tty: bool, replay: list[tuple[int, bytes]], detach_keys: bytes = detachkeys.DEFAULT
    ) -> None:
        self.raw = raw
        self.tty = tty
        self.pending = [data if tty else frame(stream, data) for stream, data in replay]
        self.escape = detachkeys.EscapeScanner(detach_keys) if tty and detach_keys else None

    def read(self) -> bytes | None:
        if self.pending:
            return self.pending.pop(0)
        if self.raw is None:
            return None
        data = self.raw.recv(65536)
        return data or None

    def write_stdin(self, data: bytes) -> None:
        if self.raw is None:
            return
        detach = False
        if self.escape is not None:
            data, detach = self.escape.feed(data)
        if data:
            self.raw.send(data)  # blocks until the container started: stdin sent early is kept, in order
        if detach:
            raise Detached()

    def close_stdin(self) -> None:
        if self.raw is not None:
            self.raw.wait_connected()
            self.raw.close_stdin()

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def wrap_attach(
    raw: Any, tty: bool, replay: list[tuple[int, bytes]], detach_keys: bytes = detachkeys.DEFAULT
) -> AttachSession:
    return AttachSession(raw, tty, replay, detach_keys)


class ExecSession:
    """Wraps runtime ExecProcess: `.stdin/.stdout/.stderr` fds, or `.pty` (master fd) for a TTY; `.wait()`."""

    def __init__(self, proc: Any, tty: bool, on_exit: Callable[[int], None]) -> None:
        self.proc = proc
        self.tty = tty
        self.on_exit = on_exit
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.finished = False
        self.master: int | None = getattr(proc, "pty", None) if tty else None
        if self.master is not None:
            self.sel.register(self.master, selectors.EVENT_READ, 1)
            self.stdin_fd: int | None = self.master
        else:
            for fd, stream in ((getattr(proc, "stdout", None), 1), (getattr(proc, "stderr", None), 2)):
                if fd is not None:
                    self.sel.register(_fd(fd), selectors.EVENT_READ, stream)
            stdin = getattr(proc, "stdin", None)
            self.stdin_fd = _fd(stdin) if stdin is not None else None

    def read(self) -> bytes | None:
        while self.sel.get_map():
            for key, _ in self.sel.select(1.0):
                try:
                    data = os.read(key.fd, 65536)
                except OSError:  # EIO on a pty master once the process is gone
                    data = b""
                if not data:
                    # not os.close: the fd belongs to the process's pipe file object, which closes it
                    # again when it is collected, by then maybe another thread's socket or lock file
                    self.sel.unregister(key.fd)
                    continue
                return data if self.tty else frame(key.data, data)
        self._finish()
        return None

    def _finish(self) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
        code = int(self.proc.wait())
        with self.lock:
            # the stdin copier thread writes to stdin_fd by number: after the close below that number may be
            # another thread's file, so no write may start once it is gone
            self.stdin_fd = None
            self.sel.close()
            try:
                self.proc.close()  # its pipes and pty master, each closed once, by their owner
            except OSError:
                pass
        self.on_exit(code)

    def write_stdin(self, data: bytes) -> None:
        with self.lock:
            if self.stdin_fd is not None:
                try:
                    os.write(self.stdin_fd, data)
                except OSError:
                    pass

    def close_stdin(self) -> None:
        with self.lock:
            if self.stdin_fd is None:
                return
            try:
                if self.tty:
                    os.write(self.stdin_fd, b"\x04")
                    return
                self.proc.close_stdin()  # closes the pipe's file object, not just its fd
            except OSError:
                pass
            self.stdin_fd = None

    def close(self) -> None:
        # the client went away: keep reaping so ExitCode is recorded
        if not self.finished:
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while self.read() is not None:
            pass


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()
