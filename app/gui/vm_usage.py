"""What a machine's VM costs the host: CPU % of its QEMU process, its resident memory, and how much of its
disk image is filled — read from /proc and the disk file, for the Machines tab's footer."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pymachine.hostvm import paths
from pymachine.hostvm.units import binary_size

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class VmSample:
    at: float  # time.monotonic()
    cpu_ticks: int | None  # utime + stime of the VM process (None: no process to read)
    rss: int | None  # bytes
    disk_used: int | None  # bytes the disk image takes on the host
    disk_size: int  # the disk's virtual size
    memory: int  # the machine's memory


def _proc(pid: int | None) -> tuple[int | None, int | None]:
    if not pid:
        return None, None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        rss = None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        return ticks, rss
    except (OSError, ValueError, IndexError):
        return None, None  # gone, or another user's process


def sample(machine: object) -> VmSample:
    name, pid = machine.name, getattr(machine, "pid", None)
    ticks, rss = _proc(pid if getattr(machine, "state", "") == "running" else None)
    try:
        used: int | None = paths.machine(name).disk.stat().st_blocks * 512
    except OSError:
        used = None
    return VmSample(
        time.monotonic(),
        ticks,
        rss,
        used,
        int(getattr(machine, "disk", 0)),
        int(getattr(machine, "memory", 0)),
    )


def cpu_percent(prev: VmSample | None, cur: VmSample) -> float | None:
    """Share of one host CPU the VM used between two samples (200 % is two host CPUs busy)."""
    if prev is None or prev.cpu_ticks is None or cur.cpu_ticks is None or cur.at <= prev.at:
        return None
    if cur.cpu_ticks < prev.cpu_ticks:
        return None  # another process (the VM restarted)
    return 100.0 * (cur.cpu_ticks - prev.cpu_ticks) / CLK_TCK / (cur.at - prev.at)


def footer_text(name: str, state: str, prev: VmSample | None, cur: VmSample | None) -> str:
    if cur is None:
        return ""
    parts = [f"{name} ({state})"]
    cpu = cpu_percent(prev, cur)
    if cpu is not None:
        parts.append(f"VM CPU {cpu:.0f} %")
    if cur.rss is not None:
        parts.append(f"memory {binary_size(cur.rss)} of {binary_size(cur.memory)}")
    if cur.disk_used is not None and cur.disk_size:
        pct = 100 * cur.disk_used / cur.disk_size
        parts.append(f"disk {binary_size(cur.disk_used)} of {binary_size(cur.disk_size)} ({pct:.0f} %)")
    return " · ".join(parts)
