"""JSON-lines events of one machine's host agent: state changes, stage progress, forwards, errors.

One object per line, appended with a single write so readers (the CLI tailing for progress, the desktop app)
never see half a line from a live writer. Every event has `ts` (wall clock, seconds) and `type`; the rest
depends on the type:

| type      | fields                                                                 |
| --------- | ---------------------------------------------------------------------- |
| `state`   | `state`: starting / connecting / ready / degraded / stopping / stopped |
| `stage`   | `step`, `total`, `name`, `state`, `seconds`, `source`: the agent's own |
|           | start-up steps (`hostvm.progress.StageProgress`, `startup.py`)         |
| `link`    | `state`: up / down, `error` (when down), `reconnects`                  |
| `forward` | `action`: opened / closed / failed, `proto`, `host_ip`, `host_port`,   |
|           | `guest_port`, `container`, `error` (when failed)                       |
| `socket`  | `state`: listening / closed, `path` (the engine socket)                |
| `clock`   | `skew` or `gap` (seconds), `ok`                                        |
| `agent`   | `action`: reprovisioning / reprovisioned, `old`, `new` (checksums)     |
| `error`   | `message`, `hint`                                                      |
| `saver`   | `state`: paused / awake / error, `reason`, `took`, `paused_for`        |
| `memory`  | `action`: give-back / let-go, `ok`, `mib`, `seconds`, `reason`, `error` |
|           | (memback.py: a resumed guest's free memory back to the host)           |
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENT_TYPES = frozenset(
    {"state", "stage", "link", "forward", "socket", "clock", "agent", "error", "share", "saver", "memory"}
)
# Keep the file from growing without bound on a machine that runs for weeks: rotate to one `.1` file.
MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    type: str
    ts: float
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"ts": round(self.ts, 3), "type": self.type, **self.fields}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Event:
        obj = json.loads(line)
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise ValueError(f"not an event: {line[:80]!r}")
        ts = obj.pop("ts", 0.0)
        kind = obj.pop("type")
        return cls(kind, float(ts), obj)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def make(kind: str, **fields: Any) -> Event:
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    return Event(kind, time.time(), {k: v for k, v in fields.items() if v is not None})


class EventWriter:
    """Appends events to one file; safe to call from the agent's many threads."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def emit(self, kind: str, **fields: Any) -> Event:
        event = make(kind, **fields)
        data = (event.to_json() + "\n").encode()
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size + len(data) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except OSError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        for listener in list(self._listeners):
            listener(event)
        return event


def parse_lines(data: str) -> list[Event]:
    """Events from file content; a torn or foreign line is skipped, never fatal to the reader."""
    out: list[Event] = []
    for line in data.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(Event.from_json(line))
        except ValueError:
            continue
    return out


def read_events(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Complete lines from `offset` on, and the offset after the last complete line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    return parse_lines(data[:end].decode(errors="replace")), offset + end


def end_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def follow(
    path: Path, offset: int = 0, poll: float = 0.1, stop: Callable[[], bool] = lambda: False
) -> Iterator[Event]:
    """Tail the file from `offset` until `stop()` is true; survives rotation (the file shrinking)."""
    while not stop():
        if end_offset(path) < offset:
            offset = 0
        batch, offset = read_events(path, offset)
        yield from batch
        if not batch:
            time.sleep(poll)
