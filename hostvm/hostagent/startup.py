"""The host agent's start-up steps, written as `stage` events (the fields of `hostvm.progress.StageProgress`)
so that the CLI and the app show them as they show `start`'s stages, without reading any message.

Each step is reported once: running, then done. A later reconnect is a `link` event, not a stage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..progress import StageProgress

NAMES = ("engine socket", "ssh link", "guest agent")


class StartupStages:
    def __init__(self, emit: Callable[..., Any]) -> None:
        self.emit = emit  # EventWriter.emit
        self._began: dict[str, float] = {}
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def _value(self, name: str, state: str, seconds: float | None = None) -> StageProgress:
        return StageProgress(NAMES.index(name) + 1, len(NAMES), name, state, seconds, "host agent")  # type: ignore[arg-type]

    def begin(self, name: str) -> None:
        with self._lock:
            if name in self._began:
                return
            self._began[name] = time.monotonic()
        self.emit("stage", **self._value(name, "running").to_fields())

    def done(self, name: str) -> None:
        self.begin(name)
        with self._lock:
            if name in self._done:
                return
            self._done.add(name)
            seconds = round(time.monotonic() - self._began[name], 3)
        self.emit("stage", **self._value(name, "done", seconds).to_fields())
