"""The host agent's control socket (`<machine>/ha.sock`, 0600): one JSON request line, one JSON answer line.

Requests: `{"op": "status"}` (link, engine socket, forwards, agent info), `{"op": "forwards"}`,
`{"op": "health"}` (a small ok/not-ok summary), `{"op": "drop-link"}` (close the SSH transport: the fault
injection the healing tests and `pymachine` debugging use), `{"op": "resync-clock"}`, `{"op": "shutdown"}`,
`{"op": "wake", "reason": ...}` (resume a machine the resource saver paused; idle.py), `{"op": "pause"}`
(pause it now), `{"op": "saver", "timeout_s": N}` (the saver's state; set its idle timeout until the agent
restarts).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None

    def start(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._loop, name="control", daemon=True).start()

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                line = conn.makefile("rb").readline(65536)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                answer = self.handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an answer, never a dead socket
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass


def call(path: Path, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Ask the agent; raises OSError when nobody answers (no agent, or a dead one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = sock.makefile("rb").readline()
    if not data:
        raise ConnectionError(f"the host agent closed {path} without answering")
    return json.loads(data)
