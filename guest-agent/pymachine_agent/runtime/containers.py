"""The Runtime: container records on disk and the lifecycle verbs (runs, restarts and reconcile: recovery.py).

Layout of `state_dir/containers/<id>/`: `config.json` (the ContainerSpec; written by the agent),
`state.json` (the agent's record: created time, restart count, manual-stop flag; written by the agent),
`run.json` (the current run: supervisor pid, container pid, exit status, OOMKilled; by the supervisor),
`container-json.log` (json-file log), `attach.sock` (the supervisor's socket), `upper/`, `work/` (overlay),
`rootfs/` (mount point inside the container's own mount namespace). Every file is written atomically.
"""

from __future__ import annotations

import os
import shutil
import signal as _signal
from pathlib import Path

from pymachine_agent.runtime import attach as attach_mod
from pymachine_agent.runtime import mounts
from pymachine_agent.runtime.callbacks import Callbacks, EventHook, NetnsHook, TeardownHook
from pymachine_agent.runtime.cgroup_place import CgroupPlace
from pymachine_agent.runtime.controls import Controls
from pymachine_agent.runtime.errors import Conflict, NotFound, RuntimeErr
from pymachine_agent.runtime.exec import boot_command
from pymachine_agent.runtime.launch import Launcher
from pymachine_agent.runtime.logs import rfc3339nano
from pymachine_agent.runtime.record import Record, signal_number
from pymachine_agent.runtime.recovery import Supervision
from pymachine_agent.runtime.spec import (
    ContainerSpec,
    ContainerState,
    WaitResult,
)
from pymachine_agent.runtime.table import ContainerTable
from pymachine_agent.runtime.zygote import Zygote


class Runtime:
    """Runs containers. Thread-safe; one instance per agent (a second instance on the same state_dir after an
    agent restart re-attaches through `reconcile`). Composes its parts: the table of records (table.py), the
    launcher of a run (launch.py), the supervision of runs (recovery.py) and the controls of a running
    container (controls.py); the record verbs and stop/kill live here."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        on_netns: NetnsHook | None = None,
        on_teardown: TeardownHook | None = None,
        on_event: EventHook | None = None,
        cgroup_root: str = "/sys/fs/cgroup",
        cgroup_parent: str = "pymachine",
    ) -> None:
        self.root = os.path.join(os.path.abspath(state_dir), "containers")
        os.makedirs(self.root, exist_ok=True)
        # the hooks may be set later (the engine does, once its parts exist): every part shares this one
        self.callbacks = Callbacks(on_netns, on_teardown, on_event)
        self._cgroups = CgroupPlace(cgroup_root, cgroup_parent)
        self._table = ContainerTable(self.root)
        self._zygote = Zygote(boot_command("pymachine_agent.runtime.zygote"))
        launcher = Launcher(self._zygote, self._table, self._cgroups, self.callbacks)
        self._supervision = Supervision(self._table, launcher, self._cgroups, self.callbacks)
        controls = Controls(self._table, self._cgroups, self.callbacks)
        # the verbs on a running container and reconcile, as the runtime's own (see controls.py, recovery.py)
        self.pause = controls.pause
        self.unpause = controls.unpause
        self.update = controls.update
        self.amend_spec = controls.amend_spec
        self.attach = controls.attach
        self.resize = controls.resize
        self.logs = controls.logs
        self.exec = controls.exec
        self.top = controls.top
        self.stats = controls.stats
        self.reconcile = self._supervision.reconcile
        self.resolve = self._table.resolve

    # --- records -------------------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ContainerState:
        """Record a new container (status "created"); prepares its upper/work dirs. Conflict if the id or name
        is taken."""
        with self._table.lock:
            if spec.id in self._table:
                raise Conflict(f"container id {spec.id} already exists")
            other = self._table.named(spec.name) if spec.name else None
            if other is not None:
                raise Conflict(
                    f'Conflict. The container name "/{spec.name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able to reuse '
                    "that name."
                )
            path = os.path.join(self.root, spec.id)
            for sub in ("upper", "work", "rootfs"):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            mounts.write_etc_defaults(spec, path)
            c = Record(spec.id, path, spec, {"created": rfc3339nano(), "restart_count": 0})
            c.save()
            c.save_spec()  # last: a folder without config.json is a create that never finished
            self._table.add(c)
        self.callbacks.event(c, "create")
        return self.inspect(spec.id)

    def inspect(self, ref: str) -> ContainerState:
        c = self._table.get(ref)
        run = c.run()
        status = c.status(run)
        running = status in ("running", "paused")
        return ContainerState(
            id=c.id,
            name=c.spec.name,
            status=status,
            pid=run.get("pid", 0) if running else 0,
            exit_code=0 if running else run.get("exit_code", 0),
            oom_killed=run.get("oom_killed", False),
            error=run.get("error", ""),
            created=c.state.get("created", ""),
            started_at=run.get("started_at", c.state.get("started_at", "0001-01-01T00:00:00Z")),
            finished_at=run.get("finished_at", "0001-01-01T00:00:00Z")
            if not running
            else "0001-01-01T00:00:00Z",
            restart_count=c.state.get("restart_count", 0),
            log_path=os.path.join(c.dir, "container-json.log"),
            upper_dir=os.path.join(c.dir, "upper"),
            rootfs=f"/proc/{run.get('pid')}/root" if running else "",
            spec=c.spec,
        )

    def list(self) -> list[ContainerState]:
        out = []
        for cid in self._table.ids():
            try:
                out.append(self.inspect(cid))
            except NotFound:
                pass  # removed meanwhile
        return out

    def rename(self, ref: str, new_name: str) -> None:
        new_name = new_name.lstrip("/")
        with self._table.lock:
            c = self._table.get(ref)
            other = self._table.named(new_name, besides=c)
            if other is not None:
                raise Conflict(
                    f'Conflict. The container name "/{new_name}" is already in use by container "{other.id}".'
                )
            old = c.spec.name
            c.spec.name = new_name
            c.save_spec()
        self.callbacks.event(c, "rename", oldName="/" + old)

    def remove(self, ref: str, force: bool = False) -> None:
        """Delete the container and its writable layer and logs. Conflict if running and not `force`
        (force kills it first)."""
        c = self._table.get(ref)
        with c.lock:
            if c.is_running() or c.state.get("restarting"):
                if not force:
                    raise Conflict(
                        f"You cannot remove a running container {c.id}. Stop the container before attempting "
                        "removal or force remove"
                    )
                c.restart_cancel.set()
                c.state["manually_stopped"] = True
                self._kill_and_wait(c, _signal.SIGKILL, 30)
            c.state["removing"] = True
            c.save()
            for stream in c.pending:
                stream.abandon()
            shutil.rmtree(c.dir, ignore_errors=True)
            self._table.drop(c.id)
        self.callbacks.event(c, "destroy")

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, ref: str) -> ContainerState:
        """Start the container's supervisor and its process; returns once the user process has exec'd.
        A no-op for a running container. StartError (with Docker's exit code 126/127) if it cannot start."""
        c = self._table.get(ref)
        with c.lock:
            if c.state.get("removing"):
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            if c.is_running():
                return self.inspect(c.id)
            c.state["manually_stopped"] = False
            c.restart_cancel.clear()
            self._supervision.start(c)
        return self.inspect(c.id)

    def _signal(self, c: Record, sig: int) -> None:
        attach_mod.request(c.dir, "kill", signal=sig)

    def _kill_and_wait(self, c: Record, sig: int, timeout: float) -> None:
        if not c.is_running():
            return
        seen = self._table.exits(c)
        if c.state.get("paused"):
            self._cgroups.freeze(c, False)
        try:
            self._signal(c, sig)
        except Conflict:
            return  # exited meanwhile
        if not self._table.wait_exit(c, seen, timeout) and sig != _signal.SIGKILL:
            try:
                self._signal(c, _signal.SIGKILL)
            except Conflict:
                pass
            self._table.wait_exit(c, seen, 30)

    def stop(self, ref: str, timeout: int | None = None) -> None:
        """Send the stop signal, then SIGKILL after `timeout` seconds (default: the spec's stop_timeout).
        Marks the container as stopped by the user, so restart policies leave it alone."""
        c = self._table.get(ref)
        c.state["manually_stopped"] = True
        c.restart_cancel.set()
        with c.lock:
            c.save()
            if not c.is_running():
                return
            wait = c.spec.stop_timeout if timeout is None else timeout
            sig = signal_number(c.spec.stop_signal or "SIGTERM")
            self._kill_and_wait(c, sig, wait if wait >= 0 else 365 * 86400)
        self.callbacks.event(c, "stop")

    def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        """Send a signal to PID 1. Conflict if not running. SIGKILL returns once the container has exited
        (as dockerd's kill does), so an inspect right after shows the exit."""
        c = self._table.get(ref)
        sig = signal_number(signal)
        c.require_running()
        if sig in (_signal.SIGKILL, signal_number(c.spec.stop_signal or "SIGTERM")):
            c.state["manually_stopped"] = True
            c.save()
        seen = self._table.exits(c)
        if c.state.get("paused") and sig == _signal.SIGKILL:
            self._cgroups.freeze(c, False)
        self._signal(c, sig)
        self.callbacks.event(c, "kill", signal=sig)
        if sig == _signal.SIGKILL:
            self._table.wait_exit(c, seen, 30)

    def restart(self, ref: str, timeout: int | None = None) -> ContainerState:
        self.stop(ref, timeout)
        state = self.start(ref)
        self.callbacks.event(self._table.get(ref), "restart")
        return state

    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None) -> WaitResult:
        """Block until the condition: "not-running" (returns at once if not running), "next-exit", or
        "removed"."""
        c = self._table.get(ref)
        seen = self._table.exits(c)
        if condition == "removed":
            self._table.wait_removed(c, timeout)
            run = c.run() if os.path.isdir(c.dir) else {}
            return WaitResult(run.get("exit_code", 0), run.get("error", ""))
        if condition == "not-running" and not (c.is_running() or c.state.get("restarting")):
            run = c.run()
            return WaitResult(run.get("exit_code", 0), run.get("error", ""))
        if not self._table.wait_exit(c, seen, timeout):
            raise RuntimeErr(f"timed out waiting for container {c.id}")
        run = c.run()
        return WaitResult(run.get("exit_code", 0), run.get("error", ""))

    def close(self) -> None:
        """Stop watching containers (they keep running)."""
        self._supervision.close()
        self._zygote.close()
