"""The ContainerManager: container records on disk, the lifecycle verbs, restart policies and reconcile.

Layout of `state_dir/containers/<id>/`: `config.json` (the ContainerSpec; written by the agent),
`state.json` (the agent's record: created time, restart count, manual-stop flag; written by the agent),
`run.json` (the current run: supervisor pid, container pid, exit status, OOMKilled; by the supervisor),
`container-json.log` (json-file log), `attach.sock` (the supervisor's socket), `upper/`, `work/` (overlay),
`rootfs/` (mount point inside the container's own mount namespace). Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pymachine_agent.runtime.spec import (
    ContainerSpec,
    ContainerState,
    ExecSpec,
    Limits,
    RestartPolicy,
    WaitResult,
)

NetnsHook = Callable[[str, int], None]
TeardownHook = Callable[[str], None]
EventHook = Callable[[str, str, dict[str, str]], None]


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
        raise NotImplementedError

    # --- records -------------------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ContainerState:
        """Record a new container (status "created"); prepares its upper/work dirs. Conflict if the id or name
        is taken."""
        raise NotImplementedError

    def resolve(self, ref: str) -> str:
        """Full id for an id, a unique id prefix or a name (leading "/" allowed). NotFound otherwise."""
        raise NotImplementedError

    def inspect(self, ref: str) -> ContainerState:
        raise NotImplementedError

    def list(self) -> list[ContainerState]:
        raise NotImplementedError

    def rename(self, ref: str, new_name: str) -> None:
        raise NotImplementedError

    def remove(self, ref: str, force: bool = False) -> None:
        """Delete the container and its writable layer and logs. Conflict if running and not `force`
        (force kills it first)."""
        raise NotImplementedError

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self, ref: str) -> ContainerState:
        """Start the container's supervisor and its process; returns once the user process has exec'd.
        A no-op for a running container. StartError (with Docker's exit code 126/127) if it cannot start."""
        raise NotImplementedError

    def stop(self, ref: str, timeout: int | None = None) -> None:
        """Send the stop signal, then SIGKILL after `timeout` seconds (default: the spec's stop_timeout).
        Marks the container as stopped by the user, so restart policies leave it alone."""
        raise NotImplementedError

    def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        """Send a signal to PID 1. Conflict if not running."""
        raise NotImplementedError

    def restart(self, ref: str, timeout: int | None = None) -> ContainerState:
        raise NotImplementedError

    def wait(self, ref: str, condition: str = "not-running", timeout: float | None = None) -> WaitResult:
        """Block until the condition: "not-running" (returns at once if not running), "next-exit", or
        "removed"."""
        raise NotImplementedError

    def pause(self, ref: str) -> None:
        """Freeze every process of the container (cgroup.freeze; on cgroup v1 SIGSTOP of each process)."""
        raise NotImplementedError

    def unpause(self, ref: str) -> None:
        raise NotImplementedError

    def update(
        self, ref: str, limits: Limits | None = None, restart_policy: RestartPolicy | None = None
    ) -> None:
        """Change limits (applied at once to a running container) and/or the restart policy."""
        raise NotImplementedError

    # --- io ------------------------------------------------------------------------------------------
    def attach(self, ref: str, stdin: bool = False, stdout: bool = True, stderr: bool = True) -> Any:
        """An AttachStream (see attach.py) to the container's stdio. Before start, the stream is connected
        when the container starts, before the user process execs, so no output is missed."""
        raise NotImplementedError

    def resize(self, ref: str, height: int, width: int) -> None:
        raise NotImplementedError

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
    ) -> Iterator[Any]:
        """LogEntry(stream, data: bytes, time: str) from the json-file log (rotated files included)."""
        raise NotImplementedError

    def exec(self, ref: str, spec: ExecSpec) -> Any:
        """Start a process inside the running container (setns into its namespaces and cgroup). Returns an
        ExecProcess (see exec.py): .pid, .stdin/.stdout/.stderr fds (or .pty master), .wait(), .resize()."""
        raise NotImplementedError

    def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        """Docker's top shape: {"Titles": [...], "Processes": [[...], ...]}."""
        raise NotImplementedError

    def stats(self, ref: str) -> dict[str, Any]:
        """One sample in Docker's stats shape (cpu_stats, precpu_stats, memory_stats, pids_stats,
        blkio_stats) read from the container's cgroup files."""
        raise NotImplementedError

    # --- agent lifecycle -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        """At agent start: re-attach to containers whose supervisors still run, mark the rest exited, and
        start containers whose restart policy says they should run (always / unless-stopped, e.g. after a VM
        restart)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop watching containers (they keep running)."""
        raise NotImplementedError
