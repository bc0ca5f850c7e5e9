"""Each run of a container from its start to its end: start and watch the supervisor, record its exit, tear
down, apply the restart policy with backoff; and at agent start, reconcile the records with the supervisors
that still run."""

from __future__ import annotations

import logging
import os
import shutil
import signal as _signal
import threading
from typing import Any

from pymachine_agent.runtime.callbacks import Callbacks
from pymachine_agent.runtime.cgroup_place import CgroupPlace
from pymachine_agent.runtime.errors import RuntimeErr
from pymachine_agent.runtime.launch import Launcher
from pymachine_agent.runtime.logs import parse_time, rfc3339nano
from pymachine_agent.runtime.monitor import ExitWatcher, should_restart, should_start_at_boot
from pymachine_agent.runtime.record import Record, supervisor_alive
from pymachine_agent.runtime.state import alive, write_json
from pymachine_agent.runtime.table import ContainerTable

log = logging.getLogger("pymachine_agent.runtime")


class Supervision:
    """Owns the exit watcher; `start` is the one way a run begins (user start, policy restart, reconcile)."""

    def __init__(
        self, table: ContainerTable, launcher: Launcher, cgroups: CgroupPlace, callbacks: Callbacks
    ) -> None:
        self._table = table
        self._launcher = launcher
        self._cgroups = cgroups
        self._callbacks = callbacks
        self._watcher = ExitWatcher(self._handle_exit)

    def start(self, c: Record) -> None:
        """Launch a run (the caller holds `c.lock`) and watch its supervisor; StartError if it cannot."""
        self._launcher.launch(c)
        run = c.run()
        c.watching = True
        if not self._watcher.watch(c.id, run.get("supervisor_pid", 0), run.get("supervisor_start", 0)):
            threading.Thread(target=self._handle_exit, args=(c.id,), daemon=True).start()
        self._callbacks.event(c, "start")

    def close(self) -> None:
        self._watcher.close()

    def _handle_exit(self, cid: str) -> None:
        """A supervisor exited: record, tear down, notify waiters, apply the restart policy."""
        c = self._table.find(cid)
        if c is None:
            return
        run = c.run()
        if run.get("status") != "exited":  # the supervisor died without recording: as dockerd does, 255
            pid_alive = alive(run.get("pid", 0), run.get("pid_start", 0))
            if pid_alive:
                os.kill(run["pid"], _signal.SIGKILL)
            self._cgroups.of(c).kill_all()
            self._cgroups.of(c).remove()
            run.update(
                status="exited",
                exit_code=255,
                error="the container's supervisor died",
                finished_at=rfc3339nano(),
            )
            write_json(os.path.join(c.dir, "run.json"), run)
        c.state.pop("paused", None)
        self._callbacks.teardown(c)
        if run.get("oom_killed"):
            self._callbacks.event(c, "oom")
        self._callbacks.event(c, "die", exitCode=run.get("exit_code", 0))
        self._table.note_exit(c, watching=False)
        with c.lock:
            if c.state.get("removing") or cid not in self._table:
                return
            if not should_restart(
                c.spec.restart_policy,
                run.get("exit_code", 0),
                c.state.get("manually_stopped", False),
                c.state.get("restart_count", 0),
            ):
                c.save()
                return
            c.state["restarting"] = True
            c.state["restart_count"] = c.state.get("restart_count", 0) + 1
            c.save()
        self._restart_with_backoff(c, run)

    def _restart_with_backoff(self, c: Record, run: dict[str, Any]) -> None:
        """moby's restart manager: 100ms, doubling per quick failure, reset after 10s of running."""
        ran = _seconds_between(run.get("started_at", ""), run.get("finished_at", ""))
        delay = 0.1 if ran >= 10 else min(60.0, c.state.get("backoff", 0.05) * 2)
        c.state["backoff"] = delay
        if c.restart_cancel.wait(delay):
            with c.lock:
                c.state["restarting"] = False
                c.save()
            return
        with c.lock:
            if c.state.get("manually_stopped") or c.state.get("removing") or c.is_running():
                c.state["restarting"] = False
                c.save()
                return
            try:
                self.start(c)
                self._callbacks.event(c, "restart")
            except RuntimeErr as e:
                log.warning("restart of %s failed: %s", c.id, e)
                c.state["restarting"] = False
                c.save()
                threading.Thread(target=self._handle_exit, args=(c.id,), daemon=True).start()

    # --- agent lifecycle -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        """At agent start: re-attach to containers whose supervisors still run, mark the rest exited, and
        start containers whose restart policy says they should run (always / unless-stopped, e.g. after a VM
        restart)."""
        for c in self._table.records():
            run = c.run()
            if c.state.get("removing"):
                shutil.rmtree(c.dir, ignore_errors=True)
                self._table.drop(c.id)
                continue
            up = run.get("status") in ("running", "created")
            if up and supervisor_alive(run):
                c.watching = True
                if self._watcher.watch(c.id, run["supervisor_pid"], run.get("supervisor_start", 0)):
                    continue
                c.watching = False
            was_up = run.get("status") in ("running", "created") or c.state.get("restarting")
            if run.get("status") in ("running", "created"):
                self._handle_exit_quietly(c, run)
            c.state["restarting"] = False
            c.save()
            if (was_up or c.state.get("started_at")) and should_start_at_boot(
                c.spec.restart_policy, c.state.get("manually_stopped", False)
            ):
                try:
                    with c.lock:
                        self.start(c)
                except RuntimeErr as e:
                    log.warning("could not restart %s at agent start: %s", c.id, e)

    def _handle_exit_quietly(self, c: Record, run: dict[str, Any]) -> None:
        """Record the end of a run whose supervisor is gone (agent or VM restarted meanwhile)."""
        if alive(run.get("pid", 0), run.get("pid_start", 0)):
            os.kill(run["pid"], _signal.SIGKILL)
        run.update(
            status="exited", exit_code=255, error="the container's supervisor died", finished_at=rfc3339nano()
        )
        write_json(os.path.join(c.dir, "run.json"), run)
        self._cgroups.of(c).remove()  # the supervisor would have; a restart makes a fresh one
        self._callbacks.teardown(c)


def _seconds_between(start: str, end: str) -> float:
    try:
        return parse_time(end) - parse_time(start)
    except ValueError:
        return 0.0
