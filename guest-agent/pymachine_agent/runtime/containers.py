"""The ContainerManager: container records on disk, the lifecycle verbs, restart policies and reconcile.

Layout of `state_dir/containers/<id>/`: `config.json` (the ContainerSpec; written by the agent),
`state.json` (the agent's record: created time, restart count, manual-stop flag; written by the agent),
`run.json` (the current run: supervisor pid, container pid, exit status, OOMKilled; by the supervisor),
`container-json.log` (json-file log), `attach.sock` (the supervisor's socket), `upper/`, `work/` (overlay),
`rootfs/` (mount point inside the container's own mount namespace). Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal as _signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymachine_agent.runtime import attach as attach_mod
from pymachine_agent.runtime import mounts
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.controls import ControlsMixin
from pymachine_agent.runtime.errors import Conflict, NotFound, RuntimeErr, StartError
from pymachine_agent.runtime.exec import boot_command
from pymachine_agent.runtime.logs import rfc3339nano
from pymachine_agent.runtime.monitor import ExitWatcher
from pymachine_agent.runtime.record import Record, signal_number
from pymachine_agent.runtime.recovery import RecoveryMixin
from pymachine_agent.runtime.spec import (
    ContainerSpec,
    ContainerState,
    WaitResult,
)
from pymachine_agent.runtime.state import alive, read_json
from pymachine_agent.runtime.zygote import Zygote

log = logging.getLogger("pymachine_agent.runtime")

NetnsHook = Callable[[str, int], None]
TeardownHook = Callable[[str], None]
EventHook = Callable[[str, str, dict[str, str]], None]
START_TIMEOUT = 60.0


class Runtime(ControlsMixin, RecoveryMixin):
    """Runs containers. Thread-safe; one instance per agent (a second instance on the same state_dir after an
    agent restart re-attaches through `reconcile`)."""

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
        self.on_netns = on_netns
        self.on_teardown = on_teardown
        self.on_event = on_event
        self.cgroup_root = cgroup_root
        self.cgroup_parent = cgroup_parent
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._ctrs: dict[str, Record] = {}
        self._prev_stats: dict[str, dict] = {}
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            config = read_json(os.path.join(path, "config.json"))
            if not config:
                continue  # a create that died half-way: nothing to run
            self._ctrs[name] = Record(
                name, path, ContainerSpec.from_json(config), read_json(os.path.join(path, "state.json"))
            )
        self._watcher = ExitWatcher(self._handle_exit)
        self._zygote = Zygote(boot_command("pymachine_agent.runtime.zygote"))

    # --- helpers -------------------------------------------------------------------------------------
    def _get(self, ref: str) -> Record:
        with self._lock:
            return self._ctrs[self.resolve(ref)]

    def _event(self, c: Record, action: str, **attrs: Any) -> None:
        if self.on_event:
            try:
                self.on_event(c.id, action, {"name": c.spec.name, **{k: str(v) for k, v in attrs.items()}})
            except Exception:
                log.exception("event hook failed")

    def _cgroup(self, c: Record) -> Cgroup:
        return Cgroup(c.id, self.cgroup_root, self.cgroup_parent)

    def _sup_alive(self, run: dict[str, Any]) -> bool:
        return alive(run.get("supervisor_pid", 0), run.get("supervisor_start", 0))

    def _status(self, c: Record, run: dict[str, Any]) -> str:
        if c.state.get("removing"):
            return "removing"
        if c.state.get("restarting"):
            return "restarting"
        if c.watching or (run.get("status") in ("running", "created") and self._sup_alive(run)):
            return "paused" if c.state.get("paused") else "running"
        if run.get("status") in ("exited", "running", "created"):
            return "exited"
        return "created"

    def _is_running(self, c: Record) -> bool:
        return self._status(c, c.run()) in ("running", "paused")

    def _require_running(self, c: Record) -> dict[str, Any]:
        run = c.run()
        if self._status(c, run) not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")
        return run

    # --- records -------------------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ContainerState:
        """Record a new container (status "created"); prepares its upper/work dirs. Conflict if the id or name
        is taken."""
        with self._lock:
            if spec.id in self._ctrs:
                raise Conflict(f"container id {spec.id} already exists")
            for other in self._ctrs.values():
                if spec.name and other.spec.name == spec.name:
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
            self._ctrs[spec.id] = c
        self._event(c, "create")
        return self.inspect(spec.id)

    def resolve(self, ref: str) -> str:
        """Full id for an id, a unique id prefix or a name (leading "/" allowed). NotFound otherwise."""
        with self._lock:
            if ref in self._ctrs:
                return ref
            name = ref.lstrip("/")
            for c in self._ctrs.values():
                if c.spec.name == name:
                    return c.id
            matches = [cid for cid in self._ctrs if cid.startswith(ref)] if ref else []
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise NotFound(f"No such container: {ref} (ambiguous id prefix)")
            raise NotFound(f"No such container: {ref}")

    def inspect(self, ref: str) -> ContainerState:
        c = self._get(ref)
        run = c.run()
        status = self._status(c, run)
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
        with self._lock:
            ids = list(self._ctrs)
        out = []
        for cid in ids:
            try:
                out.append(self.inspect(cid))
            except NotFound:
                pass  # removed meanwhile
        return out

    def rename(self, ref: str, new_name: str) -> None:
        new_name = new_name.lstrip("/")
        with self._lock:
            c = self._get(ref)
            for other in self._ctrs.values():
                if other is not c and other.spec.name == new_name:
                    raise Conflict(
                        f'Conflict. The container name "/{new_name}" is already in use by container '
                        f'"{other.id}".'
                    )
            old = c.spec.name
            c.spec.name = new_name
            c.save_spec()
        self._event(c, "rename", oldName="/" + old)

    def remove(self, ref: str, force: bool = False) -> None:
        """Delete the container and its writable layer and logs. Conflict if running and not `force`
        (force kills it first)."""
        c = self._get(ref)
        with c.lock:
            if self._is_running(c) or c.state.get("restarting"):
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
            with self._lock:
                self._ctrs.pop(c.id, None)
                self._cond.notify_all()
        self._event(c, "destroy")

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, ref: str) -> ContainerState:
        """Start the container's supervisor and its process; returns once the user process has exec'd.
        A no-op for a running container. StartError (with Docker's exit code 126/127) if it cannot start."""
        c = self._get(ref)
        with c.lock:
            if c.state.get("removing"):
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            if self._is_running(c):
                return self.inspect(c.id)
            c.state["manually_stopped"] = False
            c.restart_cancel.clear()
            self._start(c)
        return self.inspect(c.id)

    def _start(self, c: Record) -> None:
        """Spawn the supervisor and run the start handshake (see supervisor.py)."""
        c.state.pop("paused", None)
        hook = self.on_netns if c.spec.network == "new" else None
        handshake = bool(hook or c.pending)
        ctl, theirs = socket.socketpair()
        log_path = os.path.join(c.dir, "supervisor.log")
        try:
            self._zygote.spawn(c.dir, theirs.fileno(), self.cgroup_root, self.cgroup_parent, handshake)
        except OSError as e:
            ctl.close()
            raise StartError(f"cannot start the container's supervisor: {e}") from e
        finally:
            theirs.close()
        ctl.settimeout(START_TIMEOUT)
        reader = ctl.makefile("rb")

        def message() -> dict[str, Any]:
            try:
                line = reader.readline()
            except TimeoutError:  # alive but silent: a starved guest, or a hang; not a death
                what = f"the container's supervisor did not report within {START_TIMEOUT:.0f} s"
                return {"event": "error", "exit_code": 128, "message": _with_log(what, log_path)}
            except OSError:
                line = b""
            if line:
                return json.loads(line)
            return {"event": "error", "exit_code": 128, "message": _with_log("the supervisor died", log_path)}

        try:
            if handshake:
                self._handshake(c, hook, ctl, message)
            msg = message()
            if msg.get("event") != "started":
                self._teardown(c)
                raise StartError(self._start_error(c, msg), msg.get("exit_code", 128))
        finally:
            reader.close()
            ctl.close()
        c.state["restarting"] = False
        c.state["started_at"] = msg["started_at"]
        c.save(durable=False)
        run = c.run()
        c.watching = True
        if not self._watcher.watch(c.id, run.get("supervisor_pid", 0), run.get("supervisor_start", 0)):
            threading.Thread(target=self._handle_exit, args=(c.id,), daemon=True).start()
        self._event(c, "start")

    def _handshake(self, c: Record, hook: NetnsHook | None, ctl: socket.socket, message: Any) -> None:
        """Between "namespaces ready" and "go": the network hook, then connecting early attach streams."""
        msg = message()
        if msg.get("event") != "ready":
            raise StartError(self._start_error(c, msg), msg.get("exit_code", 128))
        try:
            if hook:
                hook(c.id, msg["pid"])
        except Exception as e:
            ctl.sendall(json.dumps({"abort": f"network setup failed: {e}"}).encode() + b"\n")
            message()
            self._teardown(c)
            raise StartError(f"network setup failed: {e}") from e
        for stream in c.pending:
            try:
                stream.connect(c.dir)
            except OSError as e:
                log.warning("attach before start of %s failed: %s", c.id, e)
                stream.abandon()
        c.pending.clear()
        ctl.sendall(b'{"go": true}\n')

    def _start_error(self, c: Record, msg: dict[str, Any]) -> str:
        text = msg.get("message") or "unknown error"
        self._event(c, "die", exitCode=msg.get("exit_code", 128))
        for stream in c.pending:
            stream.abandon()
        c.pending.clear()
        with self._lock:
            c.exits += 1
            self._cond.notify_all()
        return f"failed to create task for container: {text}: unknown"

    def _teardown(self, c: Record) -> None:
        if self.on_teardown and c.spec.network == "new":
            try:
                self.on_teardown(c.id)
            except Exception:
                log.exception("network teardown of %s failed", c.id)

    def _signal(self, c: Record, sig: int) -> None:
        attach_mod.request(c.dir, "kill", signal=sig)

    def _wait_exit(self, c: Record, seen: int, timeout: float | None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while c.exits == seen:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _kill_and_wait(self, c: Record, sig: int, timeout: float) -> None:
        if not self._is_running(c):
            return
        with self._lock:
            seen = c.exits
        if c.state.get("paused"):
            self._cgroup_freeze(c, False)
        try:
            self._signal(c, sig)
        except Conflict:
            return  # exited meanwhile
        if not self._wait_exit(c, seen, timeout) and sig != _signal.SIGKILL:
            try:
                self._signal(c, _signal.SIGKILL)
            except Conflict:
                pass
            self._wait_exit(c, seen, 30)

    def stop(self, ref: str, timeout: int | None = None) -> None:
        """Send the stop signal, then SIGKILL after `timeout` seconds (default: the spec's stop_timeout).
        Marks the container as stopped by the user, so restart policies leave it alone."""
        c = self._get(ref)
        c.state["manually_stopped"] = True
        c.restart_cancel.set()
        with c.lock:
            c.save()
            if not self._is_running(c):
                return
            wait = c.spec.stop_timeout if timeout is None else timeout
            sig = signal_number(c.spec.stop_signal or "SIGTERM")
            self._kill_and_wait(c, sig, wait if wait >= 0 else 365 * 86400)
        self._event(c, "stop")

    def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        """Send a signal to PID 1. Conflict if not running. SIGKILL returns once the container has exited
        (as dockerd's kill does), so an inspect right after shows the exit."""
        c = self._get(ref)
        sig = signal_number(signal)
        self._require_running(c)
        if sig in (_signal.SIGKILL, signal_number(c.spec.stop_signal or "SIGTERM")):
            c.state["manually_stopped"] = True
            c.save()
        with self._lock:
            seen = c.exits
        if c.state.get("paused") and sig == _signal.SIGKILL:
            self._cgroup_freeze(c, False)
        self._signal(c, sig)
        self._event(c, "kill", signal=sig)
        if sig == _signal.SIGKILL:
            self._wait_exit(c, seen, 30)

    def restart(self, ref: str, timeout: int | None = None) -> ContainerState:
        self.stop(ref, timeout)
        state = self.start(ref)
        self._event(self._get(ref), "restart")
        return state

    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None) -> WaitResult:
        """Block until the condition: "not-running" (returns at once if not running), "next-exit", or
        "removed"."""
        c = self._get(ref)
        with self._lock:
            seen = c.exits
        if condition == "removed":
            end = None if timeout is None else time.monotonic() + timeout
            with self._lock:
                while c.id in self._ctrs:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise RuntimeErr(f"timed out waiting for {c.id} to be removed")
                    self._cond.wait(left)
            run = c.run() if os.path.isdir(c.dir) else {}
            return WaitResult(run.get("exit_code", 0), run.get("error", ""))
        if condition == "not-running" and not (self._is_running(c) or c.state.get("restarting")):
            run = c.run()
            return WaitResult(run.get("exit_code", 0), run.get("error", ""))
        if not self._wait_exit(c, seen, timeout):
            raise RuntimeErr(f"timed out waiting for container {c.id}")
        run = c.run()
        return WaitResult(run.get("exit_code", 0), run.get("error", ""))

    def close(self) -> None:
        """Stop watching containers (they keep running)."""
        self._watcher.close()
        self._zygote.close()


def _with_log(what: str, log_path: str) -> str:
    """`what` with the supervisor's last words (a traceback, a kill), so a failed start says why."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 600))
            tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
    except OSError:
        tail = []
    return f"{what} (see {log_path}){': ' + ' | '.join(tail) if tail else ''}"
