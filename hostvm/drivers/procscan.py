"""Find a machine's QEMU process on this host (Linux /proc), for `inspect` and for tests that kill it."""

from __future__ import annotations

import os
from pathlib import Path


def find_qemu_pid(marker: str) -> int | None:
    """The pid of a process whose argv contains `marker` (e.g. `guest=pymachine-dev,`), else None."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    needle = marker.encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu" in cmdline and needle in cmdline:
            return int(entry.name)
    return None


def alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie does not: a daemonized QEMU that exited waits as one until PID 1 reaps it,
    which a container's or a sandbox's init does late (1.7 s on the CI host), and `kill(pid, 0)` succeeds on
    it meanwhile: the save and the stop of the direct-QEMU driver waited that out."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # no /proc (macOS), or it ended just now
        return Path(f"/proc/{pid}").exists() or not Path("/proc/self").exists()
    state = stat[stat.rfind(b")") + 2 :][:1]  # the field after "(comm) ", which may itself hold ")"
    return state != b"Z"
