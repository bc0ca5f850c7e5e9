"""The engine socket on the host: `<machine>/docker.sock` (0600), each connection carried to the guest agent.

The listener outlives SSH reconnects: a client that connects while the link is down waits (up to
`link_wait` seconds) for it to return instead of failing, so a heal is invisible to docker clients that
connect after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import paramiko

from . import handover, pump
from .parking import error_response
from .streamlocal import Opener
from .transport import Link, Parked

log = logging.getLogger(__name__)
GUEST_SOCKET = "/run/pymachine/docker.sock"
# How long a client connection waits for a guest agent that is being restarted by the guest init (a
# re-provision, a crash, SIGTERM). Its start took 44-71 s under TCG at a host load of 30 (imports, nft, the
# containers' reconcile), plus up to 15 s of the init's back-off after quick deaths: a shorter wait handed
# docker clients an error while the agent was about to answer.
AGENT_RESTART_S = 120.0


class SocketForward:
    def __init__(
        self,
        path: Path,
        link: Link,
        opener: Opener,
        on_error: Callable[[str], None] = lambda e: None,
        link_wait: float = 30.0,
    ) -> None:
        self.path = path
        self.link = link
        self.opener = opener
        self.on_error = on_error
        self.link_wait = link_wait
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self.connections = 0
        self.failures = 0
        self.last_error = ""
        # Around each connection: the resource saver's (idle.Saver.connection) wakes a paused machine first
        # and keeps it awake while the client stays connected.
        self.activity: Callable[[str], ContextManager[None]] = lambda kind: contextlib.nullcontext()
        # A local machine's faster channel to the guest agent, or None: SSH (fastpath.FastPath.open).
        self.fast: Callable[[], Any] = lambda: None

    def start(self) -> None:
        # The listener a killed predecessor left with the supervisor, with its queued clients (handover.py);
        # not if its path was removed meanwhile (nobody could reach it)
        srv = handover.take(handover.ENGINE)
        if srv is not None and not self.path.exists():
            srv.close()
            srv = None
        srv = srv or self._bind()
        handover.hold(handover.ENGINE, srv)
        self._server = srv
        threading.Thread(target=self._accept_loop, name="docker-sock", daemon=True).start()

    def _bind(self) -> socket.socket:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Created 0600 from the start (umask), not chmod-ed after: no window where others could connect.
        old = os.umask(0o177)
        try:
            srv.bind(str(self.path))
        finally:
            os.umask(old)
        srv.listen(128)
        return srv

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), name="docker-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        try:
            with self.activity("engine socket"):
                chan = self.fast() or self.open_channel()  # inside: a paused machine is woken first
                pump.splice(conn, chan, name="docker-fwd", hold_after_upgrade=True).join()
        except Parked as exc:  # a stopped machine: the client reads why, as the engine's error
            self._refuse(conn, str(exc))
        except Exception as exc:  # noqa: BLE001 - SSH/OS errors, or a machine that could not be woken
            self.failures += 1
            self.last_error = str(exc)
            self.on_error(f"engine socket: cannot reach the guest agent: {exc}")
            # an answer, not a bare close: the client would print "EOF" (or, mid-write, "broken pipe")
            self._refuse(conn, f"cannot reach the guest agent: {exc}")

    @staticmethod
    def _refuse(conn: socket.socket, message: str) -> None:
        """Answer a connection that reached no guest agent with the engine's 503 error, then close it."""
        with contextlib.suppress(OSError):
            conn.settimeout(2)
            conn.recv(65536)  # the request first: a reply to a client still writing could break its pipe
            conn.sendall(error_response(message))
        conn.close()

    def open_channel(self) -> paramiko.Channel:
        """A channel to the guest engine socket. Waits for the link when it is down, retries once across a
        reconnect, and waits up to `AGENT_RESTART_S` while the guest agent's socket is missing (it is being
        restarted by the guest init, e.g. after a re-provision)."""
        deadline = time.monotonic() + AGENT_RESTART_S
        relinked = False
        while True:
            transport = self.link.get(timeout=self.link_wait)
            try:
                return self.opener.open(transport)
            except paramiko.ChannelException as exc:
                if exc.code != 2 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            except paramiko.SSHException:
                if relinked or transport.is_active():
                    raise
                relinked = True
