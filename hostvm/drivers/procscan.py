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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
