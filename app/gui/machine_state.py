"""One state per machine for every place in the window (its row, the status bar, the Containers and Images
tabs, the tray), from the façade's typed MachineStatus plus what this window is doing to it.

A verb the window runs (start, stop, restart, delete) wins over the last status read: while `stop` runs the
machine is `stopping` everywhere, and a closed engine connection during that time is what a stop does, not an
error. The current stage of a start (StageProgress) makes the sentence "bars is starting — stage 2 of 5".
"""

from __future__ import annotations

from dataclasses import dataclass

from pymachine.hostvm.progress import StageProgress
from pymachine.hostvm.status import MachineStatus

BUSY_LABEL = {"start": "starting", "stop": "stopping", "restart": "restarting", "delete": "deleting"}


@dataclass(frozen=True)
class MachineView:
    name: str
    state: str  # what is shown: running, running (idle, paused), starting, stopping, stopped, saved, …
    engine: str  # the engine summary while running; "" when there is nothing to say
    stage: StageProgress | None = None
    busy: str = ""  # the verb this window runs on the machine

    @property
    def engine_usable(self) -> bool:
        """The containers and images of the machine can be asked for (no verb under way, machine up)."""
        return not self.busy and self.state.startswith("running")

    @property
    def dot(self) -> str:
        """A table_model.DOT_COLOURS key."""
        if self.busy or self.state in ("starting", "stopping"):
            return "busy"
        if self.state.startswith("running"):
            return "ok" if self.engine in ("", "ready") else "bad"
        return "bad" if self.state == "unknown" else "off"

    @property
    def startable(self) -> bool:
        """Down and nobody is changing it: a Start brings it up (state_label: stopped or saved)."""
        return not self.busy and self.state in ("stopped", "saved")

    def sentence(self) -> str:
        """What the Containers and Images tabs say when they cannot list anything."""
        if self.busy in ("start", "restart") or self.state == "starting":
            verb = "restarting" if self.busy == "restart" else "starting"
            stage = self.stage
            if stage is not None and stage.source == "start":
                return f"{self.name} is {verb} — stage {stage.step} of {stage.total}: {stage.name}"
            return f"{self.name} is {verb}…"
        if self.busy == "stop" or self.state == "stopping":
            return f"{self.name} is stopping…"
        if self.busy == "delete":
            return f"{self.name} is being deleted…"
        if self.state == "unknown":
            return f"The state of '{self.name}' is unknown: its VM driver does not answer."
        return f"Machine '{self.name}' is not running — start it on the Machines tab (Ctrl+1, then Ctrl+S)."


def machine_view(status: MachineStatus, busy: str = "", stage: StageProgress | None = None) -> MachineView:
    m = status.machine
    state = BUSY_LABEL.get(busy) or status.state or m.state
    running = state.startswith("running")
    # the engine summary only means something for a running machine nobody is stopping; "-" is "not running"
    engine = status.engine if running and not busy and status.engine != "-" else ""
    return MachineView(m.name, state, engine, stage if busy in ("start", "restart") else None, busy)
