"""The typed values that `hostvm/` hands the CLI and the desktop app while work is under way.

A progress callback receives one of these objects (or a plain `str`, a note shown as it is). Front ends render
them by their fields and never parse their text: the text form (`str(x)`) is one rendering, for logs and plain
output. The host agent writes `StageProgress` as `stage` events (`to_fields` / `stage_from_fields`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .units import human_size

StageState = Literal["running", "done", "failed"]


@dataclass(frozen=True)
class StageProgress:
    """One named step of a staged operation (`start`: domain up … host agent)."""

    step: int  # 1-based
    total: int
    name: str
    state: StageState = "running"
    seconds: float | None = None  # how long the step took (done / failed)
    source: str = "start"  # who runs the stages: "start", "create", "host agent"

    def __str__(self) -> str:
        label = f"stage {self.step} of {self.total}: {self.name}"
        if self.state == "done":
            return f"{label}: ok ({self.seconds or 0:.1f} s)"
        if self.state == "failed":
            return f"{label}: failed"
        return label

    def to_fields(self) -> dict[str, Any]:
        return asdict(self)


def stage_from_fields(fields: dict[str, Any]) -> StageProgress | None:
    """A `stage` event's fields back into the value (None for an event of an older writer without them)."""
    try:
        return StageProgress(
            step=int(fields["step"]),
            total=int(fields["total"]),
            name=str(fields["name"]),
            state=fields.get("state") or "running",
            seconds=None if fields.get("seconds") is None else float(fields["seconds"]),
            source=str(fields.get("source") or "host agent"),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LayerProgress:
    """One layer of a pull (or push): docker's `{"id", "status", "progressDetail": {current, total}}`."""

    layer: str
    status: str  # "Pulling fs layer", "Downloading", "Extracting", "Pull complete", "Already exists", ...
    current: int = 0
    total: int = 0  # 0 when unknown

    @property
    def finished(self) -> bool:
        return self.status in ("Pull complete", "Already exists", "Download complete", "Pushed")

    def __str__(self) -> str:
        size = f" {human_size(self.current)}/{human_size(self.total)}" if self.total else ""
        return f"{self.layer}: {self.status}{size}"


@dataclass(frozen=True)
class ByteProgress:
    """Bytes of one transfer: `load` (a tarball into the engine) or `save` (an image out of it)."""

    what: str  # "load" | "save" | "context"
    name: str  # the file or image
    current: int
    total: int = 0  # 0 when unknown (save: the engine does not say)

    def __str__(self) -> str:
        of = f"/{human_size(self.total)}" if self.total else ""
        return f"{self.what} {self.name}: {human_size(self.current)}{of}"


@dataclass(frozen=True)
class BuildOutput:
    """One piece of a Dockerfile build's output (`stream`), as the engine wrote it (may end in a newline)."""

    text: str

    def __str__(self) -> str:
        return self.text.rstrip("\n")


@dataclass(frozen=True)
class StepNote:
    """What a long step is doing right now (the guest image build: mmdebstrap's current package)."""

    step: str
    detail: str

    def __str__(self) -> str:
        return f"{self.step}: {self.detail}"


Event = str | StageProgress | LayerProgress | ByteProgress | BuildOutput | StepNote
Progress = Callable[[Event], None]


def quiet(_event: Event) -> None:
    pass


class Stages:
    """Reports the steps of one staged operation to a callback: `with stages.step(name):` emits `running`,
    then `done` with its seconds, or `failed` when the body raises."""

    def __init__(self, names: list[str], say: Progress, source: str = "start") -> None:
        self.names, self.say, self.source = names, say, source

    def value(self, name: str, state: StageState, seconds: float | None = None) -> StageProgress:
        return StageProgress(self.names.index(name) + 1, len(self.names), name, state, seconds, self.source)

    def step(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, stages: Stages, name: str) -> None:
        self.stages, self.name = stages, name

    def __enter__(self) -> StageProgress:
        self.started = time.monotonic()
        value = self.stages.value(self.name, "running")
        self.stages.say(value)
        return value

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        state: StageState = "failed" if kind else "done"
        self.stages.say(self.stages.value(self.name, state, round(time.monotonic() - self.started, 3)))
