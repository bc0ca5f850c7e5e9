"""The `ssh` driver: a machine that is an existing Linux host running the guest agent (remote_host.py).

There is no VM: "running" means the agent's supervisor runs on that host, and stopping ends it (never the
host). Every question goes over SSH with the pinned host key, so an unreachable host reads as an error, which
`machines.get` shows as state "unknown".
"""

from __future__ import annotations

from ..domain import VMSpec
from ..errors import PymachineError
from .base import Capabilities, Driver, DriverState


class SshDriver(Driver):
    name = "ssh"
    capabilities = Capabilities(remote=True, graceful_shutdown=False, hostfwd_add=False, existing_host=True)

    def __init__(self, where: str | None = None) -> None:
        self.where = where or "ssh"  # ssh://USER@HOST:PORT (config's `connect`), for inspect and list

    def start(self, spec: VMSpec) -> None:
        raise PymachineError("a machine on another host has no VM to boot: use pymachine start")

    def state(self, machine: str) -> DriverState:
        from .. import remote_host

        return DriverState.RUNNING if remote_host.running(machine) else DriverState.STOPPED

    def pid(self, machine: str) -> int | None:
        return None  # the agent's process lives on the other host

    def request_shutdown(self, machine: str) -> None:
        self.force_stop(machine)

    def force_stop(self, machine: str) -> None:
        from .. import remote_host

        remote_host.stop_agent(machine)

    def describe(self) -> str:
        return self.where
