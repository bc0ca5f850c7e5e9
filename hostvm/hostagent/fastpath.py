"""The engine socket's fast path on a local machine: docker.sock through QEMU's user network instead of SSH.

On a local machine every byte of `docker load`, a build context or `docker cp` crossed the emulated guest's
sshd crypto and paramiko's packet loop. Here QEMU carries them instead: a `hostfwd` rule on the host's
127.0.0.1 (a random free port) to the guest agent's relay (pymachine_agent/api/relay.py, guest port
`RELAY_GUEST_PORT`, listening on the uplink device only). The rule is reachable by every local user, so the
relay serves only connections that prove a secret (pymachine_agent/fastpath.py): 32 fresh bytes this agent
hands the guest agent over the SSH link (`PUT /pymachine/v1/fastpath`) after each hello of the guest's event
stream (each link-up, each guest agent restart), and which never leave this process otherwise.

Armed means: the guest took the secret and QEMU has the rule. The engine socket (sockforward.py) asks `open()`
for each client connection, inside the resource saver's activity (a paused machine is woken first, the
connection counts as activity like an SSH one). Any failure (no monitor, relay refused, the link down or
parked, an old guest agent that answers 404) returns None and the connection goes over SSH as before; a
failed connection disarms, and the next hello or a background re-arm (at most every REARM_S) arms again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko

from pymachine_agent import fastpath as wire

from . import guestapi, qemufwd
from .ports import PortRule
from .streamlocal import Opener
from .transport import Link

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0  # as long as an SSH channel open may take: the same emulated guest answers both
REARM_S = 5.0
RELAY_HOST_IP = "127.0.0.1"
# Connections kept open, their handshake done, for the next clients: a client then pays one round trip (its
# request) instead of three (the connect through slirp, the hello, the request). Kept only this long: the
# guest's API closes a connection with no request after its idle timeout (120 s, api/wire.py Timeouts).
WARM_CONNECTIONS = 2
WARM_MAX_AGE_S = 30.0


class SocketChannel:
    """A connected socket with the Channel methods pump.splice uses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class Armed:
    host_port: int
    secret: bytes
    generation: int


@dataclass(frozen=True)
class Warm:
    """A connection to the relay that proved the secret both ways and carried no client byte yet."""

    sock: socket.socket
    armed: Armed
    made: float

    def usable(self, armed: Armed | None, now: float) -> bool:
        """Still the current arming, young enough, and the relay has not closed it (nor sent anything)."""
        if armed is not self.armed or now - self.made > WARM_MAX_AGE_S:
            return False
        try:
            self.sock.settimeout(0)  # a timeout would make Python wait for readability before the peek
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # open and silent: what an idle HTTP server connection is
        except OSError:
            return False
        return False  # EOF (the guest agent restarted or timed it out) or bytes nobody asked for


def relay_rules(listed: list[qemufwd.HostFwd]) -> list[qemufwd.HostFwd]:
    return [f for f in listed if f.proto == "tcp" and f.guest_port == wire.RELAY_GUEST_PORT]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((RELAY_HOST_IP, 0))
        return int(s.getsockname()[1])


def connect(port: int, tries: int = 4, each: float = 0.25) -> socket.socket | None:
    """A TCP connection to QEMU's rule, or None when it did not accept in time. slirp listens with a backlog
    of 1: in a burst of connections the kernel drops a SYN and resends it only after 1 s, so a connect that
    hangs is cut short and tried again (a new SYN at once); the last failure falls back to SSH instead."""
    for _ in range(tries):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(each)
        try:
            sock.connect((RELAY_HOST_IP, port))
        except TimeoutError:
            sock.close()
            continue
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(HANDSHAKE_TIMEOUT)
        return sock
    return None


def handshake(sock: socket.socket, secret: bytes) -> None:
    """Prove the secret and check the relay's proof before any client byte goes out; OSError if it fails."""
    message, nonce = wire.hello(secret)
    sock.sendall(message)
    answer = b""
    while len(answer) < wire.TAG_LEN:
        chunk = sock.recv(wire.TAG_LEN - len(answer))
        if not chunk:
            raise ConnectionError(
                "the relay closed the connection during the handshake (it has another secret)"
            )
        answer += chunk
    if not wire.check_proof(secret, nonce, answer):
        raise ConnectionError("the listener did not prove the secret: not our relay")


def proven_connection(port: int, secret: bytes) -> socket.socket | None:
    """A blocking connection to the relay that proved the secret both ways, or None when slirp did not accept
    it in time (connect); OSError when the connection or the handshake failed."""
    sock = connect(port)
    if sock is None:
        return None
    try:
        handshake(sock, secret)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


class FastPath:
    def __init__(
        self,
        link: Link,
        opener: Opener,
        generation: Callable[[], int],
        on_event: Callable[..., None] = lambda **kw: None,
    ) -> None:
        self.link = link
        self.opener = opener  # the SSH channel to the guest agent: how the secret gets there
        self.qemu: qemufwd.QemuForwards | None = None  # None: remote, no monitor, PYMACHINE_PORT_PATH=ssh
        self._generation = generation
        self.on_event = on_event
        self._lock = threading.Lock()
        self._arming = threading.Lock()
        self._armed: Armed | None = None
        self.state = "off"
        self.forced_ssh = False  # the control op `engine-path` via "ssh" (daemon.Agent._engine_path)
        self.connections = 0
        self.fallbacks = 0
        self.last_error = ""
        self._last_rearm = 0.0
        self._rearm_pending = False
        self._warm: list[Warm] = []
        self._warming = False

    def enable(self, qemu: qemufwd.QemuForwards | None) -> None:
        """A local machine's monitor (qemufwd.machine_forwards): the fast path is armed at the next hello."""
        self.qemu = qemu
        self.state = "off" if qemu is None else "pending"

    # -- arming (after each hello, on a thread of its own) ---------------------------------------------------
    def arm_soon(self, transport: paramiko.Transport, generation: int) -> None:
        if self.qemu is not None:
            threading.Thread(
                target=self.arm, args=(transport, generation), name="fastpath", daemon=True
            ).start()

    def arm(self, transport: paramiko.Transport, generation: int, *, if_disarmed: bool = False) -> None:
        """A new secret to the guest, then QEMU's rule. `if_disarmed` (a re-arm after a failure): not when an
        arm that ran meanwhile succeeded, whose secret a new one would void under connections opening."""
        if self.qemu is None:
            return
        with self._arming:
            if if_disarmed and self._armed is not None:
                return
            try:
                armed = self._arm(transport, generation)
            except (
                paramiko.SSHException,
                OSError,
                EOFError,
                guestapi.GuestApiError,
                qemufwd.MonitorError,
            ) as exc:
                self._set_down(f"not armed: {exc}")
                return
            if armed is None:
                return
            with self._lock:
                if generation != self._generation():  # the link went down meanwhile: its secret is void
                    return
                self._armed, self.state, self.last_error = armed, "up", ""
            self.on_event(fast="up", host_port=armed.host_port)
            self._warm_soon()

    def _arm(self, transport: paramiko.Transport, generation: int) -> Armed | None:
        assert self.qemu is not None
        secret = wire.new_secret()
        status, body = guestapi.request(
            self.opener.open(transport), "PUT", guestapi.API + "/fastpath", {"secret": secret.hex()}
        )
        if status == 404:  # a guest agent from before the fast path
            with self._lock:
                self.state = "unsupported"
            return None
        if status != 200 or not isinstance(body, dict) or body.get("port") != wire.RELAY_GUEST_PORT:
            message = body.get("message") if isinstance(body, dict) else body
            raise guestapi.GuestApiError(f"the guest agent did not arm its relay: {status} {message}")
        return Armed(self._rule(), secret, generation)

    def _rule(self) -> int:
        """The host port of QEMU's one rule to the relay: one an earlier agent (or link) left is adopted (the
        secret is new, the port is only a door), extra ones go, else a new one on a free port."""
        assert self.qemu is not None
        found = relay_rules(self.qemu.listed())
        keep = next((f for f in found if f.host_ip == RELAY_HOST_IP), None)
        for fwd in found:
            if fwd is not keep:
                self.qemu.remove(fwd.key)
        if keep is not None:
            return keep.host_port
        error: Exception | None = None
        for _ in range(3):  # another process may take the free port before QEMU binds it
            port = free_port()
            try:
                self.qemu.add(PortRule("tcp", RELAY_HOST_IP, port, wire.RELAY_GUEST_PORT, ""))
                return port
            except qemufwd.MonitorError as exc:
                error = exc
        raise qemufwd.MonitorError(f"no rule for the relay: {error}")

    def disarm(self, reason: str) -> None:
        """The link went down (or was parked): the guest may come back with another agent or another QEMU."""
        with self._lock:
            was, self._armed = self._armed, None
            if self.state == "up":
                self.state = "pending"
        self._drop_warm()
        if was is not None:
            self.on_event(fast="down", reason=reason)

    def _set_down(self, error: str) -> None:
        with self._lock:
            self._armed = None
            self.state, self.last_error = "down", error
        self._drop_warm()
        self.on_event(fast="down", error=error)

    # -- one client connection -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """Which path the next engine connection takes: "fast" or "ssh"."""
        return "fast" if self._armed is not None and not self.forced_ssh else "ssh"

    def open(self) -> SocketChannel | None:
        """A connection to the guest agent's API through the relay, or None: take the SSH path (also while
        the link is down or parked: the secret is only as good as the link that carried it)."""
        armed = self._armed if self.link.current() is not None else None
        if armed is None or self.forced_ssh:
            if self.state == "down":
                self._maybe_rearm()
            return None
        warm = self._take_warm(armed)
        self._warm_soon()
        if warm is not None:
            self.connections += 1
            return SocketChannel(warm)
        try:
            sock = proven_connection(armed.host_port, armed.secret)
        except OSError as exc:
            self.fallbacks += 1
            with self._lock:
                if self._armed is armed:
                    self._armed = None
                    self.state, self.last_error = "down", f"fell back to SSH: {exc}"
            self.on_event(fast="down", error=self.last_error)
            self._maybe_rearm()
            return None
        if sock is None:  # slirp's accept queue is full (a burst): this one over SSH, the path stays
            self.fallbacks += 1
            return None
        self.connections += 1
        return SocketChannel(sock)

    # -- connections made ahead ------------------------------------------------------------------------------
    def _take_warm(self, armed: Armed) -> socket.socket | None:
        """A warm connection of this arming, the youngest usable one; the stale ones are closed."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._warm:
                    return None
                warm = self._warm.pop()
            if warm.usable(armed, now):
                warm.sock.settimeout(None)
                return warm.sock
            warm.sock.close()

    def _warm_soon(self) -> None:
        """Top the warm connections up on a thread (one at a time). Only after an arming or a client took
        one: an idle machine gets no connections made for nobody, and a paused one is not woken."""
        with self._lock:
            if self._warming or len(self._warm) >= WARM_CONNECTIONS:
                return
            self._warming = True
        threading.Thread(target=self._warm_up, name="fastpath-warm", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            while True:
                armed = self._armed if self.link.current() is not None else None
                with self._lock:
                    if armed is None or self.forced_ssh or len(self._warm) >= WARM_CONNECTIONS:
                        return
                try:
                    sock = proven_connection(armed.host_port, armed.secret)
                except OSError as exc:
                    log.info("fast path: no connection made ahead: %s", exc)  # a client's open() finds out
                    return
                if sock is None:
                    return  # slirp's queue is full: the clients of this burst come first
                with self._lock:
                    if self._armed is not armed:  # disarmed meanwhile: its secret is void
                        sock.close()
                        return
                    self._warm.append(Warm(sock, armed, time.monotonic()))
        finally:
            with self._lock:
                self._warming = False

    def _drop_warm(self) -> None:
        with self._lock:
            warm, self._warm = self._warm, []
        for entry in warm:
            entry.sock.close()

    def _maybe_rearm(self) -> None:
        """Arm again in the background, REARM_S after the last try at the soonest (one waiting at a time)."""
        with self._lock:
            if self._rearm_pending:
                return
            self._rearm_pending = True
        threading.Thread(target=self._rearm, name="fastpath-rearm", daemon=True).start()

    def _rearm(self) -> None:
        try:
            time.sleep(max(0.0, self._last_rearm + REARM_S - time.monotonic()))
            self._last_rearm = time.monotonic()
            transport = self.link.current()
            if transport is not None:
                self.arm(transport, self._generation(), if_disarmed=True)
        finally:
            self._rearm_pending = False

    # -- lifecycle and status -------------------------------------------------------------------------------
    def remove_rule(self) -> None:
        """The agent stops: QEMU's rule to the relay goes with it (a next agent makes its own)."""
        self.disarm("host agent stopping")
        if self.qemu is None:
            return
        try:
            for fwd in relay_rules(self.qemu.listed()):
                self.qemu.remove(fwd.key)
        except qemufwd.MonitorError as exc:
            log.info("the relay's rule stays in QEMU: %s", exc)

    def snapshot(self) -> dict[str, Any]:
        armed = self._armed
        return {
            "path": self.path,
            "state": self.state,
            "forced_ssh": self.forced_ssh,
            "host_port": armed.host_port if armed is not None else None,
            "connections": self.connections,
            "warm": len(self._warm),
            "fallbacks": self.fallbacks,
            "last_error": self.last_error or None,
        }
