"""Agent-side clients of a supervisor's attach.sock: one-shot requests and attach streams."""

from __future__ import annotations

import json
import os
import socket
import threading

from pymachine_agent.runtime.errors import Conflict


def _connect(ctr_dir: str, timeout: float | None = 5) -> socket.socket:
    # Through /proc/self/fd: unix socket paths are limited to 108 bytes (see supervisor.sock_path).
    dir_fd = os.open(ctr_dir, os.O_DIRECTORY | os.O_PATH)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(f"/proc/self/fd/{dir_fd}/attach.sock")
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        os.close(dir_fd)


def request(ctr_dir: str, op: str, **args: object) -> dict:
    """Send one op ("kill", "resize", "ping") to the supervisor and return its JSON answer."""
    try:
        sock = _connect(ctr_dir)
    except OSError as e:
        raise Conflict(f"container is not running (supervisor unreachable: {e.strerror or e})") from e
    with sock:
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf or b"{}")
    if not reply.get("ok"):
        raise Conflict(reply.get("error") or f"supervisor refused {op}")
    return reply


class AttachStream:
    """A connection to the container's stdio. Output arrives in Docker's attach format: raw bytes for a tty,
    otherwise 8-byte-header frames ([stream, 0, 0, 0, big-endian length]) exactly as the Docker API sends
    them, so the API layer can copy bytes through. Writes go to the container's stdin (if requested and the
    container was created with OpenStdin).

    A stream made before the container starts is connected by `start` before the user process execs;
    `wait_connected` tells whether that happened. Closed (EOF on recv) when the container exits."""

    def __init__(self, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
        self.want = {"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr}
        self.tty = tty
        self.sock: socket.socket | None = None
        self._connected = threading.Event()
        self._closed = False

    def connect(self, ctr_dir: str) -> None:
        if self._closed:
            return
        sock = _connect(ctr_dir)
        sock.sendall(json.dumps(self.want).encode() + b"\n")
        sock.settimeout(None)
        self.sock = sock
        self._connected.set()

    def abandon(self) -> None:
        """The container will not start: wake anyone waiting for the connection."""
        self._closed = True
        self._connected.set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        self._connected.wait(timeout)
        return self.sock is not None

    def fileno(self) -> int:
        self.wait_connected()
        if self.sock is None:
            raise OSError("attach stream is closed")
        return self.sock.fileno()

    def recv(self, n: int = 65536) -> bytes:
        if not self.wait_connected() or self.sock is None:
            return b""
        try:
            return self.sock.recv(n)
        except OSError:
            return b""

    def send(self, data: bytes) -> None:
        if self.wait_connected() and self.sock is not None:
            self.sock.sendall(data)

    def close_stdin(self) -> None:
        """Half-close: the supervisor closes the container's stdin if the container has StdinOnce."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self._connected.set()
        if self.sock is not None:
            self.sock.close()
