"""A container's resource use from the engine's stats samples (Docker's shape), as numbers the window shows.

CPU % is the container's CPU time over the wall time between two samples: one busy CPU is 100 %, as
`docker stats` says (see cpu_percent for why not Docker's own formula). Memory leaves out the page cache the
kernel can drop (`inactive_file`), as `docker stats` does. Network and block I/O are totals; rates come from
two samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from pymachine.hostvm.containers import parse_time


@dataclass(frozen=True)
class StatsSample:
    at: float  # seconds (from the sample's `read` time)
    cpu_total: int  # ns of CPU time the container used
    system_total: int  # ns of CPU time the machine had
    online_cpus: int
    mem_usage: int
    mem_limit: int
    net_rx: int
    net_tx: int
    blk_read: int
    blk_write: int
    pids: int
    measured: bool = True  # False: the engine had no cgroup numbers (a cgroup v1 host): CPU/memory unknown

    @classmethod
    def from_docker(cls, raw: dict[str, Any]) -> StatsSample:
        cpu = raw.get("cpu_stats") or {}
        mem = raw.get("memory_stats") or {}
        usage = int(mem.get("usage") or 0)
        cache = int((mem.get("stats") or {}).get("inactive_file") or 0)
        nets = (raw.get("networks") or {}).values()
        blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        read = parse_time(str(raw.get("read") or ""))
        return cls(
            at=read.timestamp() if read else 0.0,
            cpu_total=int((cpu.get("cpu_usage") or {}).get("total_usage") or 0),
            system_total=int(cpu.get("system_cpu_usage") or 0),
            online_cpus=int(
                cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
            ),
            mem_usage=max(0, usage - cache),
            mem_limit=int(mem.get("limit") or 0),
            net_rx=sum(int(n.get("rx_bytes") or 0) for n in nets),
            net_tx=sum(int(n.get("tx_bytes") or 0) for n in nets),
            blk_read=sum(int(e.get("value") or 0) for e in blk if str(e.get("op")).lower() == "read"),
            blk_write=sum(int(e.get("value") or 0) for e in blk if str(e.get("op")).lower() == "write"),
            pids=int((raw.get("pids_stats") or {}).get("current") or 0),
            measured=bool(mem),
        )


def cpu_percent(prev: StatsSample | None, cur: StatsSample) -> float | None:
    """CPU % between two samples (100 % is one CPU busy), or None without an earlier sample, or when the
    counters went backwards (a restart).

    The container's CPU time is divided by the wall time between the samples' `read` stamps. Docker divides
    by the machine's CPU time from /proc/stat instead (times the CPUs), which is the same on real hardware;
    but a TCG guest loses timer ticks under load, its /proc/stat undercounts and Docker's formula then shows
    one spinning shell at 400 %. Samples without stamps fall back to Docker's formula."""
    if prev is None or not (prev.measured and cur.measured):
        return None
    cpu = cur.cpu_total - prev.cpu_total
    if cpu < 0:
        return None
    if cur.at > prev.at > 0:
        return 100.0 * cpu / ((cur.at - prev.at) * 1e9)
    system = cur.system_total - prev.system_total
    return 100.0 * cpu / system * cur.online_cpus if system > 0 else None


def rate(prev: StatsSample | None, cur: StatsSample, field: str) -> float | None:
    """Bytes per second of a total (net_rx, blk_write, …) between two samples."""
    if prev is None or cur.at <= prev.at:
        return None
    delta = getattr(cur, field) - getattr(prev, field)
    return max(0.0, delta / (cur.at - prev.at))


class StatsHistory:
    """The last `size` points of each series the Stats tab draws."""

    SERIES = ("cpu", "memory", "net_rx", "net_tx", "blk_read", "blk_write")

    def __init__(self, size: int = 120) -> None:
        self.size = size
        self.last: StatsSample | None = None
        self.points: dict[str, deque[float]] = {k: deque(maxlen=size) for k in self.SERIES}
        self.mem_limit = 0

    def add(self, raw: dict[str, Any]) -> StatsSample:
        cur = StatsSample.from_docker(raw)
        prev, self.last = self.last, cur
        self.mem_limit = cur.mem_limit
        if cur.measured:
            self.points["memory"].append(float(cur.mem_usage))
        cpu = cpu_percent(prev, cur)
        if cpu is not None:
            self.points["cpu"].append(cpu)
        for field in ("net_rx", "net_tx", "blk_read", "blk_write"):
            r = rate(prev, cur, field)
            if r is not None:
                self.points[field].append(r)
        return cur
