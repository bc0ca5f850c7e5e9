"""The resource saver: pause a machine nobody uses, wake it on the first connection.

Idle means, for `timeout` seconds: no connection open on the engine socket or a published port, no wake
request (`pymachine ssh`, `start`, anything that logs in over SSH asks first), and — asked of the guest right
before pausing — no running container and no SSH login besides the host agent's own link. The guest then
trims its disk (`sync; fstrim /`) and the machine is paused through the driver (libvirt virDomainSuspend, QMP
`stop`): its vCPUs stop, QEMU uses no CPU, memory stays. The host agent keeps every listener open; the first
connection calls `wake()`, which resumes the VM before the connection is carried on, so a client sees a short
delay and nothing else.

Races, all serialised by one lock (`_op`): a connection counts itself (`active`) before it waits for the lock,
and the pause re-checks `active` after its guest probe, so a connection that arrives while the saver decides
cancels the pause; one that arrives while the driver pauses waits for the pause to finish, then resumes it.
Concurrent first connections all wait on the same lock and only the first one resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
ENV_SECONDS = "PYMACHINE_IDLE_SUSPEND_S"  # overrides the machine's minutes (tests and bench use seconds)
SSH_PORT_HEX = "0016"
TCP_ESTABLISHED = "01"


@dataclass(frozen=True)
class GuestActivity:
    """What keeps the guest busy, as the guest reports it right before a pause."""

    containers: int  # running containers
    ssh_sessions: int  # SSH connections besides the host agent's own link

    @property
    def busy(self) -> bool:
        return self.containers > 0 or self.ssh_sessions > 0

    def reason(self) -> str:
        parts = [f"{self.containers} running container(s)"] if self.containers else []
        parts += [f"{self.ssh_sessions} SSH login(s)"] if self.ssh_sessions else []
        return ", ".join(parts) or "idle"


def ssh_connections(proc_net_tcp: str) -> int:
    """Established TCP connections to the guest's port 22, from /proc/net/tcp{,6} text."""
    count = 0
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and ":" in fields[1] and fields[1].rsplit(":", 1)[1] == SSH_PORT_HEX:
            count += fields[3] == TCP_ESTABLISHED
    return count


def timeout_seconds(minutes: float | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The idle timeout in seconds: PYMACHINE_IDLE_SUSPEND_S if set, else the machine's minutes; 0 = off."""
    raw = environ.get(ENV_SECONDS)
    if raw not in (None, ""):
        try:
            return max(0.0, float(raw))
        except ValueError:
            log.warning("ignoring %s=%r: not a number of seconds", ENV_SECONDS, raw)
    return max(0.0, float(minutes or 0) * 60)


class Saver:
    def __init__(
        self,
        timeout: float,
        *,
        pause: Callable[[], None],
        unpause: Callable[[], None],
        is_paused: Callable[[], bool],
        probe: Callable[[], GuestActivity],
        before_pause: Callable[[], None] = lambda: None,
        after_unpause: Callable[[float], None] = lambda paused_for: None,
        on_event: Callable[..., None] = lambda **kw: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._pause, self._unpause, self._is_paused, self._probe = pause, unpause, is_paused, probe
        self._before_pause, self._after_unpause = before_pause, after_unpause
        self._emit = on_event
        self._clock = clock
        self._op = threading.Lock()  # one pause or unpause at a time
        self._count = threading.Lock()  # guards active / last_activity
        self.active = 0
        self.last_activity = clock()
        self.paused = False
        self.paused_at: float | None = None  # wall clock, for status
        self._paused_mono = 0.0
        self.pauses = 0
        self.wakes = 0
        self.last_wake_s: float | None = None
        self.last_busy = ""
        self.last_error = ""
        self._stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Resume a machine left paused by a previous agent (it died while the machine slept), then watch."""
        try:
            if self._is_paused():
                self.paused = True
                self._paused_mono = self._clock()
                self.wake("the host agent started")
        except Exception as exc:  # noqa: BLE001 - a driver that cannot tell must not stop the agent
            self.last_error = str(exc)
        threading.Thread(target=self._loop, name="idle-saver", daemon=True).start()

    def stop(self) -> None:
        """Leave the machine running: stop, delete and a new agent all need a guest that answers."""
        self._stop.set()
        self.wake("the host agent is stopping")

    # -- activity ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(self, kind: str) -> Iterator[None]:
        """Around one client connection: counted first (so no pause can start), then the machine woken."""
        with self._count:
            self.active += 1
            self.last_activity = self._clock()
        try:
            self.wake(kind)
            yield
        finally:
            with self._count:
                self.active -= 1
                self.last_activity = self._clock()

    def touch(self) -> None:
        with self._count:
            self.last_activity = self._clock()

    def wake(self, reason: str) -> float:
        """Resume the machine if paused (after a pause in progress, if any); returns the seconds it took."""
        self.touch()
        started = self._clock()
        # Always through the lock, never a lock-free "not paused" shortcut: a pause may be under way (the
        # driver call) with `paused` still False, and this connection must wait for it and then resume.
        with self._op:
            if not self.paused:
                return self._clock() - started
            try:
                self._unpause()
            except Exception as exc:
                # It may have resumed anyway (a libvirt error after the fact): believe the hypervisor.
                if self._is_paused():
                    self.last_error = f"could not resume the machine: {exc}"
                    self._emit(state="error", error=self.last_error, reason=reason)
                    raise
            paused_for = self._clock() - self._paused_mono
            self.paused = False
            self.paused_at = None
            self.wakes += 1
            self.last_wake_s = round(self._clock() - started, 3)
        self.touch()
        self._emit(state="awake", reason=reason, took=self.last_wake_s, paused_for=round(paused_for, 1))
        try:
            self._after_unpause(paused_for)
        except Exception:  # noqa: BLE001 - a clock step that failed must not fail the client's connection
            log.exception("after-unpause hook failed")
        return self._clock() - started

    def pause_now(self, reason: str, *, check_guest: bool = False, force: bool = False) -> bool:
        """Pause unless a connection is open (or, with `check_guest`, the guest is busy). True if paused.
        `force` pauses whatever is open (the control socket's `pause`): open connections then stall until
        the next new connection or wake request resumes the machine."""
        with self._op:
            if self.paused:
                return True
            if check_guest:
                try:
                    activity = self._probe()
                except Exception as exc:  # noqa: BLE001 - cannot tell: stay awake, try again later
                    self.last_busy = f"guest not asked: {exc}"
                    self.touch()
                    return False
                if activity.busy:
                    self.last_busy = activity.reason()
                    self.touch()
                    return False
            with self._count:
                if self.active and not force:
                    return False  # a client connected while we asked the guest
            self._before_pause()
            with self._count:
                cancelled = self.active and not force
            if cancelled:  # a client connected during the trim: no pause (and resume) for nothing
                self._after_unpause(0.0)  # release what before_pause held
                return False
            try:
                self._pause()
            except Exception as exc:
                self.last_error = f"could not pause the machine: {exc}"
                self._emit(state="error", error=self.last_error, reason=reason)
                self.touch()
                self._after_unpause(0.0)  # release what before_pause held
                return False
            self.paused = True
            self.paused_at = time.time()
            self._paused_mono = self._clock()
            self.pauses += 1
            self.last_busy = ""
        self._emit(state="paused", reason=reason)
        return True

    # -- the watcher ---------------------------------------------------------------------------------------
    def idle_for(self) -> float:
        with self._count:
            return 0.0 if self.active else self._clock() - self.last_activity

    def due(self) -> bool:
        return self.timeout > 0 and not self.paused and self.idle_for() >= self.timeout

    def _loop(self) -> None:
        while not self._stop.wait(self._tick()):
            if self.due():
                self.pause_now(f"idle for {self.timeout:g} s", check_guest=True)

    def _tick(self) -> float:
        return 5.0 if self.timeout <= 0 else min(1.0, max(0.2, self.timeout / 5))

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.timeout > 0,
            "timeout_s": self.timeout,
            "state": "paused" if self.paused else "awake",
            "paused_at": self.paused_at,
            "idle_s": round(self.idle_for(), 1),
            "connections": self.active,
            "pauses": self.pauses,
            "wakes": self.wakes,
            "last_wake_s": self.last_wake_s,
            "busy": self.last_busy or None,
            "last_error": self.last_error or None,
        }


# -- wiring into the host agent (daemon.Agent) ---------------------------------------------------------------
CONTROL_OPS = ("wake", "pause", "saver")


def control(saver: Saver | None, request: dict[str, Any]) -> dict[str, Any]:
    """The control socket's saver ops (control.py): `wake` (what `pymachine ssh`, `start` and `ssh.connect`
    ask first), `pause` (now, whatever is open: debugging and the tests of the wake-up paths), `saver` (state;
    `timeout_s` sets the idle timeout until the agent restarts)."""
    op = request.get("op")
    if saver is None:
        return {"ok": op == "wake", "error": None if op == "wake" else "this machine cannot be paused"}
    if op == "wake":
        return {"ok": True, "took": round(saver.wake(str(request.get("reason") or "wake")), 3)}
    if op == "pause":
        return {"ok": saver.pause_now("requested", force=True), "saver": saver.snapshot()}
    if request.get("timeout_s") is not None:
        saver.timeout = max(0.0, float(request["timeout_s"]))
        saver.touch()
    return {"ok": True, "saver": saver.snapshot()}


def machine_saver(name: str, agent: Any) -> Saver | None:
    """The saver of machine `name` for its host agent, or None when the machine has no config (an agent run
    against a test sshd) or its driver cannot pause."""
    from .. import machines
    from ..drivers.base import Driver

    try:
        cfg = machines.load_config(name)
        driver = machines.driver_for(cfg)
    except Exception:  # noqa: BLE001 - no machine behind this agent
        return None
    if type(driver).pause is Driver.pause:
        return None
    saver = Saver(
        timeout_seconds(getattr(cfg, "idle_suspend", 0)),
        pause=lambda: driver.pause(name),
        unpause=lambda: driver.unpause(name),
        is_paused=lambda: driver.paused(name),
        probe=lambda: probe_guest(agent),
        before_pause=lambda: _before_pause(agent),
        after_unpause=lambda paused_for: _after_unpause(agent, paused_for),
        on_event=lambda **kw: agent.events.emit("saver", **kw),
    )
    agent.engine.activity = agent.forwarder.activity = saver.connection
    return saver


def probe_guest(agent: Any) -> GuestActivity:
    """Ask the guest, over the agent's own link, for running containers and other SSH logins."""
    from .. import paths
    from . import guestapi, spare
    from .daemon import _exec

    transport = agent.link.get(timeout=10)
    chan = agent.opener.open(transport)
    chan.settimeout(15)  # the saver's lock is held meanwhile: a wedged guest agent must not hold it forever
    status, body = guestapi.request(chan, "GET", "/containers/json")
    if status != 200 or not isinstance(body, list):
        raise guestapi.GuestApiError(f"GET /containers/json answered {status}")
    tcp = _exec(transport, "cat /proc/net/tcp; cat /proc/net/tcp6 2>/dev/null; true")
    # the host agent's own link is one of them, and the spare agent's when it is connected (spare.py)
    ours = 1 + spare.connected(paths.machine(agent.name))
    return GuestActivity(containers=len(body), ssh_sessions=max(0, ssh_connections(tcp) - ours))


def _before_pause(agent: Any) -> None:
    """Give the disk back first (fstrim: the blocks of removed images and containers that the root's online
    discard missed, ~0.1 s when there are none), then stop probing the link that is about to fall silent."""
    from .daemon import _exec

    transport = agent.link.current()
    if transport is not None:
        try:
            # sync first: ext4 frees a deleted file's blocks only when its journal commits (every 5 s), and
            # fstrim cannot trim blocks still held by the running transaction
            _exec(transport, "sync; fstrim / >/dev/null 2>&1; true", timeout=60)
        except Exception as exc:  # noqa: BLE001 - a trim that failed costs disk space, never the pause
            log.info("fstrim before the idle pause: %s", exc)
    agent.forwarder.park()  # QEMU's published ports onto the agent's listeners: a connection must wake it
    agent.link.hold()


def _after_unpause(agent: Any, paused_for: float) -> None:
    """Probes again, and the guest clock stepped at once: it stood still while paused (the first request
    after a wake must see the right time), one exec; a second look in the background catches the rest."""
    from .daemon import _exec

    agent.link.release()
    agent.forwarder.unpark()
    if paused_for < 1.0:
        return
    transport = agent.link.current()
    if transport is None:
        return  # the link is down: its reconnect syncs the clock (daemon.Agent._on_up)
    try:
        _exec(transport, f"date -s @{time.time():.3f} >/dev/null")
        agent.clock["resyncs"] += 1
        agent.events.emit("clock", skew=round(paused_for, 3), ok=True, reason="resumed from idle pause")
    except Exception as exc:  # noqa: BLE001 - the link may be down: its reconnect syncs the clock
        agent.events.emit("clock", ok=False, error=str(exc), reason="resumed from idle pause")
    threading.Thread(target=agent.sync_clock, args=(transport,), name="clock", daemon=True).start()
