"""Docker's health checks: `HEALTHCHECK` in an image, `--health-*` at create, `State.Health` in inspect.

One thread per running container that has a check. Each probe runs the check's command inside the
container (as an exec with the container's user, workdir and env) and the result moves the status as
dockerd's `handleProbeResult` does: `starting` until the first success; a failure inside the start period
does not count; `retries` failures in a row make the container `unhealthy`; a success makes it `healthy`.
A change of status is published as the `health_status: <status>` event (compose's `depends_on: condition:
service_healthy` waits on it). The last five results are kept, each output cut at 4096 bytes, as dockerd
does.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .runtime.logs import rfc3339nano

log = logging.getLogger("pymachine_agent.health")

SECOND = 1_000_000_000  # the API's durations are nanoseconds
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MIN_DURATION = 1_000_000  # dockerd refuses a non-zero duration under 1 ms
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
_DURATIONS = ("Interval", "Timeout", "StartPeriod", "StartInterval")


class HealthcheckInvalid(ValueError):
    """A create body's Healthcheck that dockerd refuses (400)."""


def merge(user: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """Config.Healthcheck from the create body over the image's, field by field (dockerd's `merge`)."""
    if not user:
        return dict(image) if image else None
    out = dict(user)
    for key, value in (image or {}).items():
        if not out.get(key):
            out[key] = value
    return out


def validate(check: dict[str, Any] | None) -> None:
    if not check:
        return
    for key in _DURATIONS:
        value = check.get(key) or 0
        if value < 0 or 0 < value < MIN_DURATION:
            raise HealthcheckInvalid(f"{key} in Healthcheck cannot be less than 1ms")
    if (check.get("Retries") or 0) < 0:
        raise HealthcheckInvalid("Retries in Healthcheck cannot be negative")
    test = check.get("Test") or []
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise HealthcheckInvalid(f"unknown Healthcheck type {test[0]!r}: use CMD, CMD-SHELL or NONE")
    if test and test[0] in ("CMD", "CMD-SHELL") and len(test) < 2:
        raise HealthcheckInvalid(f"Healthcheck {test[0]} needs a command")


def probe_argv(check: dict[str, Any] | None, shell: list[str] | None) -> list[str] | None:
    """The command a probe runs, or None when the container has no check (none, or `NONE`)."""
    test = list((check or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return [*(shell or ["/bin/sh", "-c"]), test[1]]
    return test[1:]


@dataclass
class Health:
    status: str = "starting"
    failing_streak: int = 0
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LOG_ENTRIES))

    def to_docker(self) -> dict[str, Any]:
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": list(self.log)}


@dataclass
class ProbeResult:
    start: float
    end: float
    exit_code: int
    output: str


def apply_result(health: Health, result: ProbeResult, check: dict[str, Any], started_at: float) -> bool:
    """dockerd's handleProbeResult. True when the status changed."""
    before = health.status
    if result.exit_code == 0:
        health.failing_streak = 0
        health.status = "healthy"
    else:
        start_period = (check.get("StartPeriod") or 0) / SECOND
        in_start_period = health.status == "starting" and result.start - started_at < start_period
        if not in_start_period:
            health.failing_streak += 1
            if health.failing_streak >= (check.get("Retries") or DEFAULT_RETRIES):
                health.status = "unhealthy"
    health.log.append(
        {
            "Start": _rfc3339(result.start),
            "End": _rfc3339(result.end),
            "ExitCode": result.exit_code,
            "Output": result.output,
        }
    )
    return health.status != before


def next_delay(health: Health, check: dict[str, Any], started_at: float, now: float) -> float:
    """Seconds to the next probe: the start interval while starting in the start period, else the interval."""
    start_period = (check.get("StartPeriod") or 0) / SECOND
    if health.status == "starting" and now - started_at < start_period:
        return (check.get("StartInterval") or DEFAULT_START_INTERVAL) / SECOND
    return (check.get("Interval") or DEFAULT_INTERVAL) / SECOND


def read_output(proc: Any, timeout: float) -> tuple[int, str]:
    """Wait for an exec process, collecting stdout and stderr together (the first 4096 bytes); on timeout
    kill it and answer dockerd's -1 with its message."""
    fds = [fd for fd in (proc.stdout, proc.stderr) if fd is not None]
    out = bytearray()
    deadline = time.monotonic() + timeout
    while fds:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill_all()
            proc.wait()
            return -1, f"Health check exceeded timeout ({_seconds_text(timeout)})"
        ready, _, _ = select.select(fds, [], [], left)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                fds.remove(fd)
            elif len(out) < MAX_OUTPUT:
                out += data[: MAX_OUTPUT - len(out)]
    left = max(0.0, deadline - time.monotonic())
    try:
        code = proc.wait(left)
    except Exception:  # subprocess.TimeoutExpired: the output closed but the process lives on
        proc.kill_all()
        proc.wait()
        return -1, f"Health check exceeded timeout ({_seconds_text(timeout)})"
    return code, out.decode(errors="replace")


RunProbe = Callable[[str, list[str], float], tuple[int, str]]


class HealthMonitor:
    """The probe threads. `run_probe(cid, argv, timeout)` → (exit code, output) runs one probe;
    `is_running(cid)` says whether to probe now (not paused); `changed(cid, status)` publishes the event."""

    def __init__(
        self, run_probe: RunProbe, is_running: Callable[[str], bool], changed: Callable[[str, str], None]
    ) -> None:
        self._run_probe = run_probe
        self._is_running = is_running
        self._changed = changed
        self._lock = threading.Lock()
        self._health: dict[str, Health] = {}
        self._stops: dict[str, threading.Event] = {}

    def watch(self, cid: str, check: dict[str, Any] | None, shell: list[str] | None) -> None:
        """The container (re)started: status `starting`, probes on their schedule."""
        argv = probe_argv(check, shell)
        self.stop(cid)
        if argv is None or check is None:
            return
        stop = threading.Event()
        with self._lock:
            self._health[cid] = Health()
            self._stops[cid] = stop
        args = (cid, argv, check, stop, time.time())
        threading.Thread(target=self._loop, args=args, daemon=True, name=f"health-{cid[:12]}").start()

    def stop(self, cid: str) -> None:
        """The container stopped: no more probes, and the status is `unhealthy` (dockerd's
        CloseMonitorChannel does that "for compatibility reasons"; no event), the log stays for inspect."""
        with self._lock:
            stop = self._stops.pop(cid, None)
            if stop is not None:
                stop.set()
                self._health[cid].status = "unhealthy"

    def forget(self, cid: str) -> None:
        self.stop(cid)
        with self._lock:
            self._health.pop(cid, None)

    def health(self, cid: str) -> dict[str, Any] | None:
        with self._lock:
            h = self._health.get(cid)
            return h.to_docker() if h is not None else None

    def status(self, cid: str) -> str:
        """`starting` | `healthy` | `unhealthy`, or "" for a container without a check."""
        with self._lock:
            h = self._health.get(cid)
            return h.status if h is not None else ""

    def _loop(
        self, cid: str, argv: list[str], check: dict[str, Any], stop: threading.Event, started: float
    ) -> None:
        timeout = (check.get("Timeout") or DEFAULT_TIMEOUT) / SECOND
        while True:
            with self._lock:
                health = self._health.get(cid)
            if health is None or stop.wait(next_delay(health, check, started, time.time())):
                return
            if not self._is_running(cid):
                continue  # paused: dockerd does not probe a paused container
            begin = time.time()
            try:
                code, output = self._run_probe(cid, argv, timeout)
            except Exception as exc:  # the exec could not start (e.g. the container is going away)
                code, output = -1, str(exc)
            if stop.is_set():
                return
            with self._lock:
                changed = apply_result(health, ProbeResult(begin, time.time(), code, output), check, started)
                status = health.status
            if changed:
                self._changed(cid, status)


def _rfc3339(t: float) -> str:
    return rfc3339nano(int(t * 1e9))


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}s"


def exec_probe(runtime: Any, cid: str, argv: list[str], timeout: float) -> tuple[int, str]:
    """One probe as an exec in the container: its user, workdir and environment, no terminal."""
    from .runtime import ExecSpec  # the runtime imports much; health's pure parts are unit-tested without it

    proc = runtime.exec(cid, ExecSpec(argv=argv))
    try:
        return read_output(proc, timeout)
    finally:
        proc.close()
