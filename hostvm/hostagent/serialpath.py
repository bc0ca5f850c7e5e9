"""The engine socket's serial path on a local machine: docker.sock over the VM's virtio-serial port.

The VM has one virtserialport `org.pymachine.engine` whose host end is a unix socket QEMU listens on in the
machine folder (`engine.port`, domain.VMSpec.engine_port); the guest agent serves the API on the other end
(pymachine_agent/api/serialport.py). No TCP listener, no secret: only who can open that socket in the 0700
folder reaches it. This agent holds the one connection for the machine's life and carries each docker.sock
connection as a channel of pymachine_agent/serialmux.py. QEMU serves one client at a time and a client queued
in its backlog takes over the stream silently, so every (re)connect starts with a hello whose echo is awaited
before anything is trusted; a guest agent that said hello on the event stream (it may be a new one) is asked
to confirm the session (Mux.check).

`open()` is asked first for each client connection (sockforward.py); None (the port down, the guest not
accepting the channel in time) means: take the fast path, then SSH, as before.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymachine_agent import serialmux

log = logging.getLogger(__name__)
# "on": machines start with the port and their agents use it. Off by default: the serial path still loses to
# the fast path on per-request latency and on `docker load` (docs/hostagent.md, the serial path's numbers).
ENV_SWITCH = "PYMACHINE_ENGINE_PORT"
OPEN_TIMEOUT = 10.0  # as long as the fast path's handshake may take: the same emulated guest answers both
SEND_TIMEOUT = 30.0  # QEMU not taking our bytes for this long: the connection is dropped and made again
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
RECV_CHUNK = 256 * 1024


def switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").lower() not in ("on", "1", "yes")


class SerialPath:
    def __init__(self, on_event: Callable[..., None] = lambda **kw: None) -> None:
        self.on_event = on_event
        self.path: Path | None = None
        self.state = "off"  # off (no port), pending (connecting, awaiting the echo), up, down
        self.mux: serialmux.Mux | None = None
        self.connections = 0
        self.fallbacks = 0
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # a channel was not accepted in time: the others take the next paths until the guest answers a CHECK
        self._suspect = False

    def enable(self, path: Path | None) -> None:
        """The machine's port socket (None: the VM has none, remote, switched off): hold it from now on."""
        if path is None or switched_off():
            return
        self.path = path
        self.state = "pending"
        threading.Thread(target=self._run, name="serial-path", daemon=True).start()

    @property
    def up(self) -> bool:
        mux = self.mux
        return mux is not None and mux.synced and not self._suspect

    # -- the one connection to QEMU ------------------------------------------------------------------------
    def _run(self) -> None:
        assert self.path is not None
        failures = 0
        while not self._stop.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                self._down(f"cannot connect to {self.path.name}: {exc.strerror or exc}")
                self._stop.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            # a bounded send (the reader thread must never hang on a QEMU that stopped reading); blocking recv
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT), 0))
            mux = serialmux.Mux(sock.sendall, "host", on_state=self._on_state)
            with self._lock:
                self._sock, self.mux = sock, mux
                self.state = "pending"
            try:
                mux.hello()
                while data := sock.recv(RECV_CHUNK):
                    failures = 0
                    mux.feed(data)
                why = "QEMU closed the port"
            except OSError as exc:
                why = f"the port failed: {exc}"
            mux.reset(why)
            with self._lock:
                self._sock = None
            sock.close()
            self._down(why)
            self._stop.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1

    def _on_state(self, state: str, why: str) -> None:
        if state == "up":
            self._suspect = False
            if self.state != "up":
                self.state, self.last_error = "up", ""
                self.on_event(serial="up")
        elif self.state == "up":
            self.state = "pending"
            self.on_event(serial="down", reason=why)

    def _down(self, error: str) -> None:
        was = self.state
        self.state, self.last_error = "down", error
        if was != "down":
            log.info("serial path down: %s", error)

    def check(self) -> None:
        """The guest agent said hello on its event stream (a new one, maybe): confirm the session."""
        mux = self.mux
        if mux is None or self._sock is None:
            return
        threading.Thread(target=self._quietly, args=(mux.check,), name="serial-check", daemon=True).start()

    @staticmethod
    def _quietly(fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError as exc:
            log.info("serial path: %s", exc)

    # -- one client connection -----------------------------------------------------------------------------
    def open(self) -> serialmux.Channel | None:
        mux = self.mux
        if mux is None or not mux.synced:
            return None
        if self._suspect:
            self.fallbacks += 1
            return None
        try:
            ch = mux.open(OPEN_TIMEOUT)
        except OSError as exc:  # LinkDown included: the guest agent restarting, a new one not synced yet
            self.fallbacks += 1
            self.last_error = f"fell back: {exc}"
            self.on_event(serial="down", error=self.last_error)
            self._suspect = True  # until the guest answers: live channels stay if it is the same session
            threading.Thread(
                target=self._quietly, args=(mux.check,), name="serial-check", daemon=True
            ).start()
            return None
        self.connections += 1
        return ch

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def snapshot(self) -> dict[str, Any]:
        mux = self.mux
        return {
            "state": self.state,
            "port": str(self.path) if self.path else None,
            "channels": len(mux.channels) if mux is not None else 0,
            "connections": self.connections,
            "fallbacks": self.fallbacks,
            "resets": mux.resets if mux is not None else 0,
            "last_error": self.last_error or (mux.last_reset if mux is not None else "") or None,
        }


def machine_port(name: str) -> Path | None:
    """Machine `name`'s port socket when its VM has one (its driver adds it and this boot did), else None."""
    if switched_off():
        return None
    from .. import paths, store

    try:
        started = store.read_json(paths.machine(name).state, {}) or {}
    except Exception:  # noqa: BLE001 - an agent run against a test sshd has no machine
        return None
    return paths.machine(name).engine_port if started.get("engine_port") else None
