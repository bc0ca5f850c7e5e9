"""Runtime verbs on a running container that are not its lifecycle: pause/unpause, update, attach, resize,
logs, exec, top and stats."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from pymachine_agent.runtime import attach as attach_mod
from pymachine_agent.runtime import procs
from pymachine_agent.runtime.attach import AttachStream
from pymachine_agent.runtime.callbacks import Callbacks
from pymachine_agent.runtime.cgroup_place import CgroupPlace
from pymachine_agent.runtime.errors import Conflict, RuntimeErr
from pymachine_agent.runtime.exec import ExecProcess, make_payload
from pymachine_agent.runtime.logs import LogEntry, read_logs, rfc3339nano
from pymachine_agent.runtime.spec import ContainerSpec, ExecSpec, Limits, RestartPolicy
from pymachine_agent.runtime.table import ContainerTable


class Controls:
    def __init__(self, table: ContainerTable, cgroups: CgroupPlace, callbacks: Callbacks) -> None:
        self._table = table
        self._cgroups = cgroups
        self._callbacks = callbacks
        self._prev_stats: dict[str, dict] = {}

    def pause(self, ref: str) -> None:
        """Freeze every process of the container (cgroup.freeze; on cgroup v1 SIGSTOP of each process)."""
        c = self._table.get(ref)
        with c.lock:
            c.require_running()
            if c.state.get("paused"):
                raise Conflict(f"Container {c.id} is already paused")
            self._cgroups.freeze(c, True)
        self._callbacks.event(c, "pause")

    def unpause(self, ref: str) -> None:
        c = self._table.get(ref)
        with c.lock:
            c.require_running()
            if not c.state.get("paused"):
                raise Conflict(f"Container {c.id} is not paused")
            self._cgroups.freeze(c, False)
        self._callbacks.event(c, "unpause")

    def update(
        self, ref: str, limits: Limits | None = None, restart_policy: RestartPolicy | None = None
    ) -> None:
        """Change limits (applied at once to a running container) and/or the restart policy."""
        c = self._table.get(ref)
        with c.lock:
            if limits is not None:
                c.spec.limits = limits
                if c.is_running():
                    self._cgroups.of(c).apply(limits)
            if restart_policy is not None:
                c.spec.restart_policy = restart_policy
            c.save_spec()
        self._callbacks.event(c, "update")

    def amend_spec(self, ref: str, change: Callable[[ContainerSpec], None]) -> None:
        """Change a container's stored spec (what its next start uses), e.g. the env its links give."""
        c = self._table.get(ref)
        with c.lock:
            change(c.spec)
            c.save_spec()

    # --- io ------------------------------------------------------------------------------------------
    def attach(self, ref: str, stdin: bool = False, stdout: bool = True, stderr: bool = True) -> AttachStream:
        """An AttachStream (see attach.py) to the container's stdio. Before start, the stream is connected
        when the container starts, before the user process execs, so no output is missed."""
        c = self._table.get(ref)
        stream = AttachStream(stdin and c.spec.open_stdin, stdout, stderr, c.spec.tty)
        with c.lock:
            if c.is_running():
                stream.connect(c.dir)
            else:
                c.pending.append(stream)
        return stream

    def resize(self, ref: str, height: int, width: int) -> None:
        c = self._table.get(ref)
        c.require_running()
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
        c = self._table.get(ref)
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
            running=lambda: c.id in self._table and (c.is_running() or bool(c.state.get("restarting"))),
        )

    def exec(self, ref: str, spec: ExecSpec) -> ExecProcess:
        """Start a process inside the running container (setns into its namespaces and cgroup). Returns an
        ExecProcess (see exec.py): .pid, .stdin/.stdout/.stderr fds (or .pty master), .wait(), .resize()."""
        c = self._table.get(ref)
        run = c.require_running()
        if c.state.get("paused"):
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if not spec.argv:
            raise RuntimeErr("No exec command specified")
        cg = self._cgroups.of(c)
        joined = cg.v2_path if cg.v2_path and cg.v2_path.exists() else ""  # its limits and device program
        payload = make_payload(run["pid"], str(joined), spec, c.spec)
        return ExecProcess(payload, spec.stdin, spec.detach)

    def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        """Docker's top shape: {"Titles": [...], "Processes": [[...], ...]} (ps -ef columns; ps_args is
        not interpreted)."""
        c = self._table.get(ref)
        run = c.require_running()
        cg = self._cgroups.of(c)
        return procs.top(procs.container_pids(run["pid"], cg.pids() if cg.enabled else None))

    def stats(self, ref: str) -> dict[str, Any]:
        """One sample in Docker's stats shape (cpu_stats, precpu_stats, memory_stats, pids_stats,
        blkio_stats) read from the container's cgroup files."""
        c = self._table.get(ref)
        sample = self._cgroups.of(c).stats() if c.is_running() else {}
        sample.update(read=rfc3339nano(), id=c.id, name="/" + c.spec.name)
        prev = self._prev_stats.get(c.id, {})
        sample["preread"] = prev.get("read", "0001-01-01T00:00:00Z")
        sample["precpu_stats"] = prev.get("cpu_stats", {"cpu_usage": {"total_usage": 0}})
        self._prev_stats[c.id] = sample
        return sample
