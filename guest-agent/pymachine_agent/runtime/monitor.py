"""Watches supervisors with pidfds (they are not our children after a re-attach) and reports their exits;
and the restart-policy decision (moby's restartmanager)."""

from __future__ import annotations

import logging
import os
import selectors
import threading
from collections.abc import Callable

from pymachine_agent.runtime.spec import RestartPolicy
from pymachine_agent.runtime.state import start_time

log = logging.getLogger("pymachine_agent.runtime.monitor")


def should_restart(policy: RestartPolicy, exit_code: int, manually_stopped: bool, restart_count: int) -> bool:
    if manually_stopped:
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    if policy.name == "on-failure":
        return exit_code != 0 and (
            policy.maximum_retry_count <= 0 or restart_count < policy.maximum_retry_count
        )
    return False


def should_start_at_boot(policy: RestartPolicy, manually_stopped: bool) -> bool:
    """At agent start, like dockerd: `always` even if stopped by hand, `unless-stopped` if not."""
    return policy.name == "always" or (policy.name == "unless-stopped" and not manually_stopped)


class ExitWatcher:
    """One thread; calls `on_exit(key)` (in a new thread) when the watched process exits."""

    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int]] = []
        self._fds: dict[str, int] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="runtime-exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, key: str, pid: int, started: int = 0) -> bool:
        """False if the process is already gone. `started` (its start time, see state.start_time) guards
        against a recycled pid."""
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, ValueError, OSError):
            return False
        if started and start_time(pid) != started:
            os.close(fd)
            return False
        with self._lock:
            self._pending.append((key, fd))
        os.write(self._wake_w, b"x")
        return True

    def _run(self) -> None:
        while not self._stop:
            events = self.sel.select()
            # Exits first, new watches after: a new watch of a key replaces (closes) its old pidfd, and that
            # pidfd may be among these very events; handled after the close, it would be unregistered and
            # closed again, by then maybe under its number a pidfd another thread just opened.
            with self._lock:
                replaced = {key for key, _ in self._pending}
            for k, _ in events:
                if k.data is not None:
                    self.sel.unregister(k.fd)
                    os.close(k.fd)
                    del self._fds[k.data]
                    if k.data not in replaced:  # a watch replaced meanwhile is for a newer process
                        threading.Thread(target=self._report, args=(k.data,), daemon=True).start()
            if any(k.data is None for k, _ in events):
                os.read(self._wake_r, 4096)
                with self._lock:
                    pending, self._pending = self._pending, []
                for key, fd in pending:
                    old = self._fds.pop(key, None)
                    if old is not None:
                        self.sel.unregister(old)
                        os.close(old)
                    self._fds[key] = fd
                    self.sel.register(fd, selectors.EVENT_READ, key)

    def _report(self, key: str) -> None:
        try:
            self.on_exit(key)
        except Exception:
            log.exception("handling the exit of %s failed", key)

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(2)
