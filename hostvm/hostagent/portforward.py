"""Host listeners for published ports, on one of two paths (`Listener.path`):

- "qemu": on a local machine QEMU's user network listens itself (qemufwd.py: hostfwd_add through the monitor)
  and hands each TCP connection to the guest's uplink address; nothing passes through this process.
- "ssh": this process listens; each accepted TCP connection rides a direct-tcpip channel to the guest's
  127.0.0.1:<guest_port>; UDP datagrams ride a per-listener exec channel running a tiny relay. Used for remote
  machines, IPv6 host addresses, UDP (our restricted user network drops the guest's datagrams: qemufwd.py),
  and whenever the monitor is unavailable or refuses the rule (then this bind names the real error). While
  the resource saver holds the machine paused, QEMU's rules are "parked" here (`park`/`unpark`): slirp would
  accept a connection and queue it for a guest that never wakes, whereas this process sees the connection
  and wakes the machine first.

Listeners stay open across SSH reconnects (the port keeps its owner on the host); connections that arrive
while the link is down wait for it. `Forwarder.open` binds synchronously so the caller can ack the guest
with the truth: ok, or "host port … is already in use".
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field

import paramiko

from . import handover, pump, qemufwd
from .ports import Key, PortRule, in_use_error
from .transport import Link
from .udp import UdpRelay

log = logging.getLogger(__name__)
WINDOW_SIZE = 8 * 1024 * 1024
CONNECT_RETRY_S = 3.0  # how long a connection to a young port waits for the container to listen
YOUNG_S = 30.0


class BindError(Exception):
    pass


@dataclass
class Listener:
    rule: PortRule
    sock: socket.socket | None  # None on the qemu path: QEMU holds the host socket
    opened_at: float = field(default_factory=time.time)
    path: str = "ssh"  # "qemu" | "ssh": who carries the port now
    parked: bool = False  # a qemu-path port on this process's listener while the machine is paused
    connections: int = 0
    failures: int = 0
    last_error: str = ""
    udp: UdpRelay | None = None

    def health(self, link_up: bool) -> str:
        if self.path == "qemu":
            return "failing" if self.last_error else "ok"  # QEMU carries it: the SSH link plays no part
        if not link_up:
            return "waiting-for-link"
        if self.udp is not None and not self.udp.healthy():
            return "failing"
        # The last connection decides: a success after failures clears `last_error` (see _carry).
        return "failing" if self.last_error else "ok"


class Forwarder:
    def __init__(
        self,
        link: Link,
        on_event: Callable[..., None] = lambda **kw: None,
        link_wait: float = 30.0,
    ) -> None:
        self.link = link
        self.on_event = on_event
        self.link_wait = link_wait
        self._lock = threading.Lock()
        self.listeners: dict[Key, Listener] = {}
        self._adopted: set[Key] = set()  # inherited listeners the guest has not confirmed yet
        # Around each TCP connection: the resource saver wakes a paused machine first (see sockforward.py).
        self.activity: Callable[[str], ContextManager[None]] = lambda kind: contextlib.nullcontext()
        self.qemu: qemufwd.QemuForwards | None = None  # set for a local machine (qemufwd.machine_forwards)
        self.parked = False

    # -- control --------------------------------------------------------------------------------------------
    def open(self, rule: PortRule) -> None:
        """Forward the port now, through QEMU when it can, else bind the host side here; raise BindError (the
        message names the port) when it is taken. Either way the port answers when this returns."""
        with self._lock:
            adopted = self.listeners.get(rule.key) if rule.key in self._adopted else None
            self._adopted.discard(rule.key)
        if adopted is not None:  # still published: the inherited listener is this rule's (SSH path)
            self.retarget(rule)
            handover.hold(handover.port_key(rule.key), adopted.sock, rule.to_json())
            self.on_event(action="opened", path="ssh", **rule.to_json())
            return
        if self._via_qemu(rule):
            listener = Listener(rule, None, path="qemu")
            with self._lock:
                self.listeners[rule.key] = listener
            self.on_event(action="opened", path="qemu", **rule.to_json())
            return
        try:
            sock = self._bind(rule)
        except BindError:
            if not self._release_from_qemu(rule):
                raise
            sock = self._bind(rule)
        self._serve(Listener(rule, sock))
        handover.hold(handover.port_key(rule.key), sock, rule.to_json())
        self.on_event(action="opened", path="ssh", **rule.to_json())

    def _via_qemu(self, rule: PortRule) -> bool:
        if self.qemu is None or self.parked or not self.qemu.supports(rule):
            return False
        try:
            self.qemu.add(rule)
            return True
        except qemufwd.MonitorError as exc:
            # the SSH listener below either works (monitor gone) or names the bind error (port taken)
            self.on_event(action="fallback", path="ssh", error=str(exc), **rule.to_json())
            return False

    def _release_from_qemu(self, rule: PortRule) -> bool:
        """A port this agent wants on the SSH path that QEMU still holds from an earlier agent (which put it
        on the QEMU path): take it back. True if it was there."""
        if self.qemu is None:
            return False
        try:
            if not any(f.key == rule.key and f.ours for f in self.qemu.listed()):
                return False
            self.qemu.remove(rule.key)
        except qemufwd.MonitorError:
            return False
        return True

    @staticmethod
    def _bind(rule: PortRule) -> socket.socket:
        family = socket.AF_INET6 if ":" in rule.host_ip else socket.AF_INET
        kind = socket.SOCK_STREAM if rule.proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family, kind)
        if rule.proto == "tcp":
            # REUSEADDR only skips TIME_WAIT leftovers; a live listener still makes bind fail.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((rule.host_ip, rule.host_port))
            if rule.proto == "tcp":
                sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise BindError(in_use_error(rule)) from exc
            if exc.errno == errno.EACCES:
                raise BindError(
                    f"host port {rule.host_ip}:{rule.host_port} needs privileges to bind (ports below 1024)"
                ) from exc
            raise BindError(f"cannot listen on host {rule.host_ip}:{rule.host_port}: {exc.strerror}") from exc
        return sock

    def _serve(self, listener: Listener) -> None:
        rule = listener.rule
        with self._lock:
            self.listeners[rule.key] = listener
        if rule.proto == "tcp":
            threading.Thread(
                target=self._accept_loop,
                args=(listener, listener.sock),
                name=f"port-{rule.host_port}",
                daemon=True,
            ).start()
        else:
            listener.udp = UdpRelay(listener.sock, rule, self.link)  # type: ignore[arg-type]
            listener.udp.start()

    def adopt_held(self) -> None:
        """Serve at once the listeners a killed predecessor left with the supervisor (handover.py): their
        queued and new connections go to the guest as soon as the link is up, before the guest agent's port
        replay confirms them (`open`) or not (`settle_adopted`). Only SSH-path ports are held: QEMU keeps
        its own across the agent's death."""
        for info, sock in handover.held_ports():
            try:
                rule = PortRule(**info)
                if rule.proto not in ("tcp", "udp") or not isinstance(rule.host_port, int):
                    raise TypeError(f"bad rule {info}")
            except TypeError as exc:
                log.warning("an inherited listener dropped: %s", exc)
                sock.close()
                continue
            with self._lock:
                self._adopted.add(rule.key)
            self._serve(Listener(rule, sock))
            self.on_event(action="adopted", **rule.to_json())

    def settle_adopted(self) -> None:
        """The guest agent's port replay is over: an inherited listener it did not name is unpublished."""
        with self._lock:
            stale = list(self._adopted)
        for key in stale:
            self.close(key, "unpublished in the guest while the host agent was down")

    def retarget(self, rule: PortRule) -> None:
        with self._lock:
            listener = self.listeners.get(rule.key)
            if listener is not None:
                listener.rule = rule
                if listener.udp is not None:
                    listener.udp.retarget(rule)
        if listener is not None and listener.path == "qemu" and self.qemu is not None:
            try:
                self.qemu.remove(rule.key)
                self.qemu.add(rule)
            except qemufwd.MonitorError as exc:
                listener.last_error = str(exc)

    def close(self, key: Key, reason: str = "") -> None:
        with self._lock:
            listener = self.listeners.pop(key, None)
            self._adopted.discard(key)
        if listener is None:
            return
        if listener.sock is not None:
            handover.drop(handover.port_key(key))
        if listener.path == "qemu" and self.qemu is not None:
            try:
                self.qemu.remove(key)
            except qemufwd.MonitorError as exc:  # left in QEMU: the next reconcile removes it
                self.on_event(action="failed", error=str(exc), **listener.rule.to_json())
        self._unbind(listener)
        self.on_event(action="closed", reason=reason or None, **listener.rule.to_json())

    @staticmethod
    def _unbind(listener: Listener) -> None:
        if listener.udp is not None:
            listener.udp.stop()
            listener.udp = None
        if listener.sock is None:
            return
        try:
            listener.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.sock.close()
        listener.sock = None

    def close_all(self) -> None:
        for key in list(self.listeners):
            self.close(key, "host agent stopping")

    # -- QEMU's side: reconcile after a resync, park while paused --------------------------------------------
    def reconcile(self, *, remove_stale: bool = True) -> None:
        """Make QEMU's hostfwd rules exactly the qemu-path ports (after every event-stream resync: a host
        agent killed with -9 left rules of containers gone since; a restarted or restored QEMU lost ours).
        With `remove_stale` off only the missing are put back (at hello, before the guest's port replay, a
        host agent started after a kill -9 knows no ports yet and must not cut the ones QEMU still serves)."""
        if self.qemu is None or self.parked:
            return
        with self._lock:
            wanted = [li.rule for li in self.listeners.values() if li.path == "qemu"]
        try:
            added, removed = self.qemu.reconcile(wanted, remove_stale=remove_stale)
        except qemufwd.MonitorError as exc:
            self.on_event(action="failed", error=f"reconciling QEMU's forwards: {exc}")
            return
        for rule in added:
            self.on_event(action="reconciled", path="qemu", change="re-added", **rule.to_json())
        for fwd in removed:
            self.on_event(
                action="reconciled", path="qemu", change="removed stale", proto=fwd.proto,
                host_ip=fwd.host_ip, host_port=fwd.host_port, guest_port=fwd.guest_port,
            )  # fmt: skip

    def park(self) -> None:
        """Before a pause: take QEMU's ports onto this process's listeners, which wake the machine first."""
        with self._lock:
            self.parked = True
            moving = [li for li in self.listeners.values() if li.path == "qemu"]
        for li in moving:
            try:
                if self.qemu is not None:
                    self.qemu.remove(li.rule.key)
                li.sock = self._bind(li.rule)
            except (qemufwd.MonitorError, BindError) as exc:
                li.last_error = f"not parked for the pause (a connection will not wake it): {exc}"
                continue
            li.path, li.parked = "ssh", True
            self._serve(li)

    def unpark(self) -> None:
        """After a wake: back to QEMU (a connection accepted here meanwhile goes on over SSH)."""
        with self._lock:
            self.parked = False
            moving = [li for li in self.listeners.values() if li.parked]
        for li in moving:
            self._unbind(li)
            li.parked = False
            if self._via_qemu(li.rule):
                li.path, li.last_error = "qemu", ""
                continue
            try:
                li.sock = self._bind(li.rule)
                self._serve(li)
            except BindError as exc:
                li.last_error = str(exc)

    def snapshot(self) -> list[dict[str, object]]:
        up = self.link.current() is not None
        with self._lock:
            items = list(self.listeners.values())
        return [
            {
                **li.rule.to_json(),
                "path": li.path,
                "health": li.health(up),
                "connections": li.connections,
                "failures": li.failures,
                "last_error": li.last_error or None,
                "opened_at": li.opened_at,
            }
            for li in items
        ]

    # -- data path ------------------------------------------------------------------------------------------
    def _accept_loop(self, listener: Listener, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return  # closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._carry, args=(listener, conn, peer), daemon=True).start()

    def _carry(self, listener: Listener, conn: socket.socket, peer: tuple[str, int]) -> None:
        listener.connections += 1
        rule = listener.rule  # read once: a retarget mid-connection applies to the next one
        try:
            with self.activity(f"port {rule.host_port}"):
                chan = self._open_tcp(listener, rule, peer)
                listener.last_error = ""
                pump.splice(conn, chan, name=f"port-{rule.host_port}-conn").join()
        except Exception as exc:  # noqa: BLE001 - SSH/OS errors, or a machine that could not be woken
            listener.failures += 1
            listener.last_error = str(exc) or type(exc).__name__
            self.on_event(action="failed", error=listener.last_error, **rule.to_json())
            conn.close()

    def _open_tcp(self, listener: Listener, rule: PortRule, peer: tuple[str, int]) -> paramiko.Channel:
        """A direct-tcpip channel to the guest port, waiting for the link when it is down. While the port is
        young, a refused connect (the container's server still starting: `docker run -d` returns before the
        process listens) is retried briefly, so `run -d -p …; curl` works without a sleep."""
        deadline = time.monotonic() + CONNECT_RETRY_S
        delay = 0.02
        relinked = False
        while True:
            transport = self.link.get(timeout=self.link_wait)
            try:
                return transport.open_channel(
                    "direct-tcpip",
                    ("127.0.0.1", rule.guest_port),
                    (peer[0], peer[1]),
                    window_size=WINDOW_SIZE,
                    timeout=10,
                )
            except paramiko.ChannelException as exc:
                young = time.time() - listener.opened_at < YOUNG_S
                if exc.code != 2 or not young or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except paramiko.SSHException:
                if relinked or transport.is_active():
                    raise
                relinked = True  # the link died under us: one more try on the next transport
