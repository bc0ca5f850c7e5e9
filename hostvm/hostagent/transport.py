"""One SSH transport to the guest, kept alive and re-established with backoff.

Every (re)connect goes through the same `connect` function, which must verify the pinned host key (see
`open_transport`): a guest that comes back with another key is refused, never accepted. Liveness is probed by
an OpenSSH `keepalive@openssh.com` global request that must be answered: a TCP connection into QEMU's user
network stays "up" while the guest is paused or its sshd is wedged, so only an answered probe proves the link.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

log = logging.getLogger(__name__)

# Backoff stays short: the promise is "working again within 2 s of the link returning", and each attempt
# against a guest that is not listening yet costs only a refused/closed TCP connection on loopback.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 0.5
PROBE_INTERVAL = 2.0
# A keep-alive answer queues behind whatever bulk data is in flight (an image upload) and an emulated (TCG)
# guest on a busy host decrypts slowly: 5 s declared healthy links dead mid-upload and broke `docker load`.
# A dead peer is usually seen at once as EOF; the probe is only for silent hangs, so it can afford patience.
PROBE_TIMEOUT = 20.0


class HostKeyMismatch(paramiko.SSHException):
    pass


class Parked(paramiko.SSHException):
    """The machine is stopped with its state saved: nothing to connect to until it resumes."""


def load_pinned_key(path: Path) -> paramiko.PKey:
    """The pinned host key from a `.pub` file, a known_hosts line, or the private key file itself."""
    text = path.read_text().strip()
    if text.startswith("-----BEGIN"):
        # A private key compares by its public half (asbytes() is the public blob).
        return paramiko.PKey.from_path(path)
    for line in text.splitlines():
        parts = line.split()
        for i, part in enumerate(parts[:-1]):
            if part.startswith(("ssh-", "ecdsa-")):
                return paramiko.PKey.from_type_string(part, base64.b64decode(parts[i + 1]))
    raise ValueError(f"no public key in {path}")


def open_transport(
    host: str,
    port: int,
    username: str,
    pkey: paramiko.PKey,
    pinned: paramiko.PKey,
    timeout: float = 10.0,
    sock: Any = None,
) -> paramiko.Transport:
    """Connect, check the server's key against `pinned` (refusing any other), and authenticate. `sock`: a
    channel to speak over instead (a VM behind its remote libvirt host, remote_libvirt.py)."""
    if sock is None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        got = t.get_remote_server_key()
        if got.get_name() != pinned.get_name() or got.asbytes() != pinned.asbytes():
            raise HostKeyMismatch(
                f"the guest at {host}:{port} presented host key {got.get_name()} {got.fingerprint}, "
                f"not the pinned {pinned.fingerprint}"
            )
        t.auth_publickey(username, pkey)
        sock.settimeout(None)
    except BaseException:
        t.close()
        raise
    return t


class Link:
    """Owns the current transport; a background thread reconnects whenever it dies.

    `on_up(transport)` runs on the link thread after each connect (start subscribers there); `on_down(error)`
    after each loss. `get(timeout)` hands the current transport to forwarders, waiting for a reconnect.
    """

    def __init__(
        self,
        connect: Callable[[], paramiko.Transport],
        on_up: Callable[[paramiko.Transport], None] = lambda t: None,
        on_down: Callable[[str], None] = lambda e: None,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._connect = connect
        self._on_up = on_up
        self._on_down = on_down
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._cond = threading.Condition()
        self._transport: paramiko.Transport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "connecting"
        self.last_error = ""
        self.reconnects = 0
        self.connected_at = 0.0
        self.down_since: float | None = time.time()
        # The resource saver pauses the guest (idle.py): a paused guest answers no probe; that is no fault.
        self.held = False
        self._hold_epoch = 0
        # A saving `stop` parks the link (no connect attempts against a VM that is not there) and the resume
        # unparks it: the connect starts that instant, with no backoff to wait out. Set by stop and unpark.
        self.parked = ""
        self._kick = threading.Event()

    # -- the resource saver ------------------------------------------------------------------------------
    def hold(self) -> None:
        """The guest is being paused: no keep-alive probes (one in flight does not count) until release."""
        self.held = True
        self._hold_epoch += 1

    def release(self) -> None:
        self.held = False
        self._hold_epoch += 1

    # -- a saving stop and the resume ------------------------------------------------------------------------
    def park(self, reason: str) -> None:
        """The VM is about to be saved and stopped: close the transport, attempt nothing until `unpark`;
        meanwhile `get` fails at once with `reason` instead of waiting for a link that cannot come."""
        with self._cond:
            self.parked = reason
            self._cond.notify_all()
        self.drop(reason)

    def unpark(self) -> None:
        """The VM runs again: connect now."""
        with self._cond:
            self.parked = ""
            self._cond.notify_all()
        self._kick.set()

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` between attempts; cut short by stop and unpark."""
        self._kick.wait(seconds)
        self._kick.clear()

    # -- used by forwarders -------------------------------------------------------------------------------
    def get(self, timeout: float = 30.0) -> paramiko.Transport:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._stop.is_set():
                if self.parked:
                    raise Parked(self.parked)
                t = self._transport
                if t is not None and t.is_active():
                    return t
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        raise paramiko.SSHException(f"the SSH link to the guest is down: {self.last_error or 'connecting'}")

    def current(self) -> paramiko.Transport | None:
        t = self._transport
        return t if t is not None and t.is_active() else None

    def drop(self, reason: str = "dropped on request") -> None:
        """Close the current transport (tests and the sleep detector use it); the thread reconnects."""
        t = self._transport
        if t is not None:
            self.last_error = reason
            t.close()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ssh-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self.drop("stopping")
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        first = True
        while not self._stop.is_set():
            if self.parked:
                self._pause(3600.0)
                delay = BACKOFF_FIRST
                continue
            try:
                t = self._connect()
            except HostKeyMismatch as exc:
                self._set_down(str(exc))
                # Security failure: keep trying (the right guest may come back) but slowly and loudly.
                self._pause(5.0)
                continue
            except Exception as exc:  # noqa: BLE001 - any connect failure means "try again"
                self._set_down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                log.info("connecting failed, again in %.1f s: %s", delay, self.last_error)
                self._pause(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if self.parked:  # parked while this attempt connected (to the VM being saved)
                t.close()
                continue
            delay = BACKOFF_FIRST
            if not first:
                self.reconnects += 1
            first = False
            with self._cond:
                self._transport = t
                self.state = "up"
                self.connected_at = time.time()
                self.down_since = None
                self._cond.notify_all()
            try:
                self._on_up(t)
            except Exception:  # noqa: BLE001 - a broken subscriber must not kill the link
                log.exception("on_up failed")
            reason = self._watch(t)
            t.close()
            if not self._stop.is_set():
                self._set_down(reason)

    def _set_down(self, error: str) -> None:
        was_up = self.state == "up"
        with self._cond:
            self.state = "down"
            self.last_error = error
            if self.down_since is None:
                self.down_since = time.time()
            self._transport = None
        if was_up:
            try:
                self._on_down(error)
            except Exception:  # noqa: BLE001
                log.exception("on_down failed")

    def _watch(self, t: paramiko.Transport) -> str:
        """Block until the transport dies or stops answering probes; return why."""
        next_probe = time.monotonic() + self.probe_interval
        while not self._stop.is_set():
            if not t.is_active():
                exc = t.get_exception()
                return (
                    f"connection lost: {str(exc) or type(exc).__name__}"
                    if exc
                    else (self.last_error or "connection lost")
                )
            if self.held:
                next_probe = time.monotonic() + self.probe_interval
            elif time.monotonic() >= next_probe:
                if not self._probe(t):
                    return f"the guest did not answer a keep-alive within {self.probe_timeout:.0f} s"
                next_probe = time.monotonic() + self.probe_interval
            self._stop.wait(0.05)
        return "stopping"

    def _probe(self, t: paramiko.Transport) -> bool:
        done = threading.Event()
        epoch = self._hold_epoch

        def ask() -> None:
            try:
                # OpenSSH answers unknown global requests with REQUEST_FAILURE; any answer proves life.
                t.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001
                return
            done.set()

        threading.Thread(target=ask, name="ssh-probe", daemon=True).start()
        # A pause during the wait explains the silence (the answer comes after the resume): not a dead link.
        return done.wait(self.probe_timeout) or not t.is_active() or epoch != self._hold_epoch or self.held
