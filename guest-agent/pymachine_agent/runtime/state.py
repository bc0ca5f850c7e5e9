"""Atomic JSON records (through the engine's one atomic write) and process identity checks."""

from __future__ import annotations

from typing import Any

from pymachine_agent import atomic


def write_json(path: str, data: dict[str, Any], durable: bool = True) -> None:
    """Replace `path` atomically: readers see the old or the new record, never a torn one. `durable` also
    fsyncs, for records that must survive a power loss (not worth it on every container start: a lost run
    record is repaired by reconcile)."""
    atomic.write_json(path, data, durable=durable)


def read_json(path: str) -> dict[str, Any]:
    """The record, or {} when it is missing or unreadable (logged): a record must not crash the agent."""
    data = atomic.read_json_record(path)
    return data if isinstance(data, dict) else {}


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), 0 if it is gone or a
    zombie. Together with the pid it identifies a process across pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return 0
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    return pid > 0 and started > 0 and start_time(pid) == started
