"""Atomic JSON records (write to a temp file, fsync, rename) and process identity checks."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, data: dict[str, Any], durable: bool = True) -> None:
    """Replace `path` atomically: readers see the old or the new record, never a torn one. `durable` also
    fsyncs, for records that must survive a power loss (not worth it on every container start: a lost run
    record is repaired by reconcile)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError:  # never happens with atomic writes, but a record must not crash the agent
        return {}


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
