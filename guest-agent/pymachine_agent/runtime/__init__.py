"""The container runtime: namespaces, overlayfs, cgroup v2, capabilities and a supervisor per container.

Public API (what the engine calls)::

    from pymachine_agent.runtime import ContainerSpec, ExecSpec, Limits, Mount, RestartPolicy, Runtime

    rt = Runtime("/var/lib/pymachine/runtime", on_netns=net.attach, on_teardown=net.detach)
    rt.reconcile()                       # at agent start: re-attach running containers, restart `always` ones
    rt.create(ContainerSpec(id=..., name=..., layers=[lowest, ..., top], argv=["sh", "-c", "echo hi"]))
    stream = rt.attach(id)               # before start: connected before the user process execs
    rt.start(id)                         # returns once the user process has exec'd (or raises RuntimeErr)
    rt.wait(id)                          # -> WaitResult(exit_code, error)
    rt.stop(id, timeout=10); rt.kill(id, "SIGKILL"); rt.restart(id); rt.remove(id, force=True)
    rt.pause(id); rt.unpause(id); rt.update(id, limits=Limits(memory=...))
    proc = rt.exec(id, ExecSpec(argv=["ps"], tty=False)); proc.wait()
    rt.logs(id, follow=False, tail=None) # -> iterator of LogEntry(stream, data, time)
    rt.stats(id); rt.top(id); rt.inspect(id); rt.list(); rt.resolve(name_or_id_or_prefix)

Hooks: `on_netns(container_id, pid)` runs after the container's PID 1 is in its new network namespace and
before the user process execs (configure the veth then); `on_teardown(container_id)` runs once the container
has stopped (before any policy restart). `on_event(container_id, action, attributes)` reports Docker-style
events: create, start, die, oom, stop, kill, pause, unpause, restart, destroy, rename, update.

Every failure a caller should show is a `RuntimeErr` (subclasses: `NotFound` 404, `Conflict` 409,
`StartError` with Docker's exit code 126/127) whose message is Docker-like ("No such container: x",
"Container x is not running"). Security options: `privileged`, `cap_add`/`cap_drop`, `seccomp` ("default":
Docker's profile; "unconfined"; or a profile's JSON, see seccomp.py).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymachine_agent.runtime.containers import Runtime
    from pymachine_agent.runtime.errors import Conflict, NotFound, RuntimeErr, StartError
    from pymachine_agent.runtime.spec import (
        ContainerSpec,
        ContainerState,
        ExecSpec,
        Limits,
        LogConfig,
        Mount,
        RestartPolicy,
        WaitResult,
    )

_WHERE = {
    "Runtime": "containers",
    "Conflict": "errors",
    "NotFound": "errors",
    "RuntimeErr": "errors",
    "StartError": "errors",
    **dict.fromkeys(
        [
            "ContainerSpec",
            "ContainerState",
            "ExecSpec",
            "Limits",
            "LogConfig",
            "Mount",
            "RestartPolicy",
            "WaitResult",
        ],
        "spec",
    ),
}


def __getattr__(name: str) -> object:
    # Lazy, so that the supervisor and exec helpers (fresh interpreters on every start) import only what they
    # use: the engine-facing Runtime pulls in threading, subprocess and the rest.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"pymachine_agent.runtime.{_WHERE[name]}"), name)
    raise AttributeError(name)


__all__ = [
    "Conflict",
    "ContainerSpec",
    "ContainerState",
    "ExecSpec",
    "Limits",
    "LogConfig",
    "Mount",
    "NotFound",
    "RestartPolicy",
    "Runtime",
    "RuntimeErr",
    "StartError",
    "WaitResult",
]
