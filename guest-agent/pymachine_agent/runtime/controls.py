"""Runtime verbs on a running container that are not its lifecycle: pause/unpause, update, attach, resize,
logs, exec, top and stats."""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Callable, Iterator
from typing import Any

from pymachine_agent.runtime import attach as attach_mod
from pymachine_agent.runtime import procs
from pymachine_agent.runtime.attach import AttachStream
from pymachine_agent.runtime.errors import Conflict, RuntimeErr
from pymachine_agent.runtime.exec import ExecProcess, make_payload
from pymachine_agent.runtime.logs import LogEntry, read_logs, rfc3339nano
from pymachine_agent.runtime.record import Record
from pymachine_agent.runtime.spec import ContainerSpec, ExecSpec, Limits, RestartPolicy


class ControlsMixin:
    """Part of Runtime (see containers.py)."""

    def _cgroup_freeze(self, c: Record, frozen: bool) -> None:
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

    def amend_spec(self, ref: str, change: Callable[[ContainerSpec], None]) -> None:
        """Change a container's stored spec (what its next start uses), e.g. the env its links give."""
        c = self._get(ref)
        with c.lock:
            change(c.spec)
            c.save_spec()

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
        """LogEntry(stream, data: bytes, time: str) from the json-file log (rotated files included).
        RuntimeErr for a container whose log driver is "none", with Docker's message."""
        c = self._get(ref)
        if c.spec.log_config.type != "json-file":
            raise RuntimeErr(
                f'configured logging driver does not support reading: "{c.spec.log_config.type}"'
            )
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
        joined = cg.v2_path if cg.v2_path and cg.v2_path.exists() else ""  # its limits and device program
        payload = make_payload(run["pid"], str(joined), spec, c.spec)
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
