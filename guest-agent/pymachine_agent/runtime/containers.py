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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pymachine_agent.runtime import attach as attach_mod
from pymachine_agent.runtime import mounts, procs
from pymachine_agent.runtime.attach import AttachStream
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.errors import Conflict, NotFound, RuntimeErr, StartError
from pymachine_agent.runtime.exec import ExecProcess, boot_command, make_payload
from pymachine_agent.runtime.logs import LogEntry, read_logs, rfc3339nano
from pymachine_agent.runtime.monitor import ExitWatcher, should_restart, should_start_at_boot
from pymachine_agent.runtime.spec import (
    ContainerSpec,
    ContainerState,
    ExecSpec,
    Limits,
    RestartPolicy,
    WaitResult,
)
from pymachine_agent.runtime.state import alive, read_json, write_json
from pymachine_agent.runtime.zygote import Zygote

log = logging.getLogger("pymachine_agent.runtime")

NetnsHook = Callable[[str, int], None]
TeardownHook = Callable[[str], None]
EventHook = Callable[[str, str, dict[str, str]], None]
START_TIMEOUT = 60.0


def signal_number(sig: str | int) -> int:
    if isinstance(sig, int) or str(sig).isdigit():
        return int(sig)
    name = str(sig).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise RuntimeErr(f"invalid signal: {sig}") from None


class _Container:
    """In-memory record; `state` mirrors state.json (the agent's own fields)."""

    def __init__(self, cid: str, path: str, spec: ContainerSpec, state: dict[str, Any]) -> None:
        self.id = cid
        self.dir = path
        self.spec = spec
        self.state = state
        self.lock = threading.RLock()  # serialises start/stop/remove of this container
        self.exits = 0  # bumped on every observed exit, for wait()
        self.pending: list[AttachStream] = []
        self.restart_cancel = threading.Event()
        self.watching = False  # a supervisor runs whose exit the agent has not handled yet

    def run(self) -> dict[str, Any]:
        return read_json(os.path.join(self.dir, "run.json"))

    def save(self, durable: bool = True) -> None:
        write_json(os.path.join(self.dir, "state.json"), self.state, durable)

    def save_spec(self) -> None:
        write_json(os.path.join(self.dir, "config.json"), self.spec.to_json())


class Runtime:
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
        self._ctrs: dict[str, _Container] = {}
        self._prev_stats: dict[str, dict] = {}
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            config = read_json(os.path.join(path, "config.json"))
            if not config:
                continue  # a create that died half-way: nothing to run
            self._ctrs[name] = _Container(
                name, path, ContainerSpec.from_json(config), read_json(os.path.join(path, "state.json"))
            )
        self._watcher = ExitWatcher(self._handle_exit)
        self._zygote = Zygote(boot_command("pymachine_agent.runtime.zygote"))

    # --- helpers -------------------------------------------------------------------------------------
    def _get(self, ref: str) -> _Container:
        with self._lock:
            return self._ctrs[self.resolve(ref)]

    def _event(self, c: _Container, action: str, **attrs: Any) -> None:
        if self.on_event:
            try:
                self.on_event(c.id, action, {"name": c.spec.name, **{k: str(v) for k, v in attrs.items()}})
            except Exception:
                log.exception("event hook failed")

    def _cgroup(self, c: _Container) -> Cgroup:
        return Cgroup(c.id, self.cgroup_root, self.cgroup_parent)

    def _sup_alive(self, run: dict[str, Any]) -> bool:
        return alive(run.get("supervisor_pid", 0), run.get("supervisor_start", 0))

    def _status(self, c: _Container, run: dict[str, Any]) -> str:
        if c.state.get("removing"):
            return "removing"
        if c.state.get("restarting"):
            return "restarting"
        if c.watching or (run.get("status") in ("running", "created") and self._sup_alive(run)):
            return "paused" if c.state.get("paused") else "running"
        if run.get("status") in ("exited", "running", "created"):
            return "exited"
        return "created"

    def _is_running(self, c: _Container) -> bool:
        return self._status(c, c.run()) in ("running", "paused")

    def _require_running(self, c: _Container) -> dict[str, Any]:
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
            c = _Container(spec.id, path, spec, {"created": rfc3339nano(), "restart_count": 0})
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

    def _start(self, c: _Container) -> None:
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
            except OSError:
                line = b""
            return (
                json.loads(line)
                if line
                else {"event": "error", "exit_code": 128, "message": f"the supervisor died (see {log_path})"}
            )

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

    def _handshake(self, c: _Container, hook: NetnsHook | None, ctl: socket.socket, message: Any) -> None:
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

    def _start_error(self, c: _Container, msg: dict[str, Any]) -> str:
        text = msg.get("message") or "unknown error"
        self._event(c, "die", exitCode=msg.get("exit_code", 128))
        for stream in c.pending:
            stream.abandon()
        c.pending.clear()
        with self._lock:
            c.exits += 1
            self._cond.notify_all()
        return f"failed to create task for container: {text}: unknown"

    def _teardown(self, c: _Container) -> None:
        if self.on_teardown and c.spec.network == "new":
            try:
                self.on_teardown(c.id)
            except Exception:
                log.exception("network teardown of %s failed", c.id)

    def _handle_exit(self, cid: str) -> None:
        """A supervisor exited: record, tear down, notify waiters, apply the restart policy."""
        with self._lock:
            c = self._ctrs.get(cid)
        if c is None:
            return
        run = c.run()
        if run.get("status") != "exited":  # the supervisor died without recording: as dockerd does, 255
            pid_alive = alive(run.get("pid", 0), run.get("pid_start", 0))
            if pid_alive:
                os.kill(run["pid"], _signal.SIGKILL)
            self._cgroup(c).kill_all()
            self._cgroup(c).remove()
            run.update(
                status="exited",
                exit_code=255,
                error="the container's supervisor died",
                finished_at=rfc3339nano(),
            )
            write_json(os.path.join(c.dir, "run.json"), run)
        c.state.pop("paused", None)
        self._teardown(c)
        if run.get("oom_killed"):
            self._event(c, "oom")
        self._event(c, "die", exitCode=run.get("exit_code", 0))
        with self._lock:
            c.exits += 1
            c.watching = False
            self._cond.notify_all()
        with c.lock:
            if c.state.get("removing") or cid not in self._ctrs:
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

    def _restart_with_backoff(self, c: _Container, run: dict[str, Any]) -> None:
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
            if c.state.get("manually_stopped") or c.state.get("removing") or self._is_running(c):
                c.state["restarting"] = False
                c.save()
                return
            try:
                self._start(c)
                self._event(c, "restart")
            except RuntimeErr as e:
                log.warning("restart of %s failed: %s", c.id, e)
                c.state["restarting"] = False
                c.save()
                threading.Thread(target=self._handle_exit, args=(c.id,), daemon=True).start()

    def _signal(self, c: _Container, sig: int) -> None:
        attach_mod.request(c.dir, "kill", signal=sig)

    def _wait_exit(self, c: _Container, seen: int, timeout: float | None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while c.exits == seen:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _kill_and_wait(self, c: _Container, sig: int, timeout: float) -> None:
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
        """Send a signal to PID 1. Conflict if not running."""
        c = self._get(ref)
        sig = signal_number(signal)
        self._require_running(c)
        if sig in (_signal.SIGKILL, signal_number(c.spec.stop_signal or "SIGTERM")):
            c.state["manually_stopped"] = True
            c.save()
        self._signal(c, sig)
        self._event(c, "kill", signal=sig)

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

    def _cgroup_freeze(self, c: _Container, frozen: bool) -> None:
        cg = self._cgroup(c)
        if cg.enabled:
            cg.freeze(frozen)
        else:  # cgroup v1 host: stop every process of the container's pid namespace instead
            for pid in procs.container_pids(c.run().get("pid", 0), None):
                try:
                    os.kill(pid, _signal.SIGSTOP if frozen else _signal.SIGCONT)
                except ProcessLookupError:
                    pass
        c.state["paused"] = frozen
        c.save()

    def pause(self, ref: str) -> None:
        """Freeze every process of the container (cgroup.freeze; on cgroup v1 SIGSTOP of each process)."""
        c = self._get(ref)
        with c.lock:
            self._require_running(c)
            if c.state.get("paused"):
                raise Conflict(f"Container {c.id} is already paused")
            self._cgroup_freeze(c, True)
        self._event(c, "pause")

    def unpause(self, ref: str) -> None:
        c = self._get(ref)
        with c.lock:
            self._require_running(c)
            if not c.state.get("paused"):
                raise Conflict(f"Container {c.id} is not paused")
            self._cgroup_freeze(c, False)
        self._event(c, "unpause")

    def update(
        self, ref: str, limits: Limits | None = None, restart_policy: RestartPolicy | None = None
    ) -> None:
        """Change limits (applied at once to a running container) and/or the restart policy."""
        c = self._get(ref)
        with c.lock:
            if limits is not None:
                c.spec.limits = limits
                if self._is_running(c):
                    self._cgroup(c).apply(limits)
            if restart_policy is not None:
                c.spec.restart_policy = restart_policy
            c.save_spec()
        self._event(c, "update")

    # --- io ------------------------------------------------------------------------------------------
    def attach(self, ref: str, stdin: bool = False, stdout: bool = True, stderr: bool = True) -> AttachStream:
        """An AttachStream (see attach.py) to the container's stdio. Before start, the stream is connected
        when the container starts, before the user process execs, so no output is missed."""
        c = self._get(ref)
        stream = AttachStream(stdin and c.spec.open_stdin, stdout, stderr, c.spec.tty)
        with c.lock:
            if self._is_running(c):
                stream.connect(c.dir)
            else:
                c.pending.append(stream)
        return stream

    def resize(self, ref: str, height: int, width: int) -> None:
        c = self._get(ref)
        self._require_running(c)
        attach_mod.request(c.dir, "resize", height=height, width=width)

    def logs(
        self,
        ref: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        since: float = 0,
        until: float = 0,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[LogEntry]:
        """LogEntry(stream, data: bytes, time: str) from the json-file log (rotated files included)."""
        c = self._get(ref)
        return read_logs(
            os.path.join(c.dir, "container-json.log"),
            stdout=stdout,
            stderr=stderr,
            since=since,
            until=until,
            tail=tail,
            follow=follow,
            running=lambda: c.id in self._ctrs and (self._is_running(c) or bool(c.state.get("restarting"))),
        )

    def exec(self, ref: str, spec: ExecSpec) -> ExecProcess:
        """Start a process inside the running container (setns into its namespaces and cgroup). Returns an
        ExecProcess (see exec.py): .pid, .stdin/.stdout/.stderr fds (or .pty master), .wait(), .resize()."""
        c = self._get(ref)
        run = self._require_running(c)
        if c.state.get("paused"):
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if not spec.argv:
            raise RuntimeErr("No exec command specified")
        cg = self._cgroup(c)
        payload = make_payload(run["pid"], str(cg.path) if cg.enabled else "", spec, c.spec)
        return ExecProcess(payload, spec.stdin, spec.detach)

    def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        """Docker's top shape: {"Titles": [...], "Processes": [[...], ...]} (ps -ef columns; ps_args is
        not interpreted)."""
        c = self._get(ref)
        run = self._require_running(c)
        cg = self._cgroup(c)
        return procs.top(procs.container_pids(run["pid"], cg.pids() if cg.enabled else None))

    def stats(self, ref: str) -> dict[str, Any]:
        """One sample in Docker's stats shape (cpu_stats, precpu_stats, memory_stats, pids_stats,
        blkio_stats) read from the container's cgroup files."""
        c = self._get(ref)
        sample = self._cgroup(c).stats() if self._is_running(c) else {}
        sample.update(read=rfc3339nano(), id=c.id, name="/" + c.spec.name)
        prev = self._prev_stats.get(c.id, {})
        sample["preread"] = prev.get("read", "0001-01-01T00:00:00Z")
        sample["precpu_stats"] = prev.get("cpu_stats", {"cpu_usage": {"total_usage": 0}})
        self._prev_stats[c.id] = sample
        return sample

    # --- agent lifecycle -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        """At agent start: re-attach to containers whose supervisors still run, mark the rest exited, and
        start containers whose restart policy says they should run (always / unless-stopped, e.g. after a VM
        restart)."""
        with self._lock:
            ctrs = list(self._ctrs.values())
        for c in ctrs:
            run = c.run()
            if c.state.get("removing"):
                shutil.rmtree(c.dir, ignore_errors=True)
                with self._lock:
                    self._ctrs.pop(c.id, None)
                continue
            up = run.get("status") in ("running", "created")
            if up and self._sup_alive(run):
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
                        self._start(c)
                except RuntimeErr as e:
                    log.warning("could not restart %s at agent start: %s", c.id, e)

    def _handle_exit_quietly(self, c: _Container, run: dict[str, Any]) -> None:
        """Record the end of a run whose supervisor is gone (agent or VM restarted meanwhile)."""
        if alive(run.get("pid", 0), run.get("pid_start", 0)):
            os.kill(run["pid"], _signal.SIGKILL)
        run.update(
            status="exited", exit_code=255, error="the container's supervisor died", finished_at=rfc3339nano()
        )
        write_json(os.path.join(c.dir, "run.json"), run)
        self._teardown(c)

    def close(self) -> None:
        """Stop watching containers (they keep running)."""
        self._watcher.close()
        self._zygote.close()


def _seconds_between(start: str, end: str) -> float:
    from pymachine_agent.runtime.logs import parse_time

    try:
        return parse_time(end) - parse_time(start)
    except ValueError:
        return 0.0
