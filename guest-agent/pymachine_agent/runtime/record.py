"""The agent's in-memory record of one container, backed by its files: config.json (the spec), state.json
(the agent's fields) and run.json (the supervisor's record of the current run)."""

from __future__ import annotations

import os
import signal as _signal
import threading
from typing import Any

from pymachine_agent.runtime.attach import AttachStream
from pymachine_agent.runtime.errors import Conflict, RuntimeErr
from pymachine_agent.runtime.spec import ContainerSpec
from pymachine_agent.runtime.state import alive, read_json, write_json


def signal_number(sig: str | int) -> int:
    if isinstance(sig, int) or str(sig).isdigit():
        return int(sig)
    name = str(sig).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise RuntimeErr(f"invalid signal: {sig}") from None


class Record:
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

    def status(self, run: dict[str, Any]) -> str:
        """Docker's status word for this container given its current run record."""
        if self.state.get("removing"):
            return "removing"
        if self.state.get("restarting"):
            return "restarting"
        if self.watching or (run.get("status") in ("running", "created") and supervisor_alive(run)):
            return "paused" if self.state.get("paused") else "running"
        if run.get("status") in ("exited", "running", "created"):
            # dockerd's rule (State.StateString): a container that never started (its first start failed: a
            # missing executable, an unknown user, a taken port) reads "created", with the start's exit code
            return "exited" if self.state.get("started_at") else "created"
        return "created"

    def is_running(self) -> bool:
        return self.status(self.run()) in ("running", "paused")

    def require_running(self) -> dict[str, Any]:
        """The current run record; Conflict when the container is not running."""
        run = self.run()
        if self.status(run) not in ("running", "paused"):
            raise Conflict(f"Container {self.id} is not running")
        return run


def supervisor_alive(run: dict[str, Any]) -> bool:
    return alive(run.get("supervisor_pid", 0), run.get("supervisor_start", 0))
