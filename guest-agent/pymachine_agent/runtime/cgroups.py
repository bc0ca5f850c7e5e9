"""cgroup v2: one cgroup per container under <root>/<parent>/<id>, limits, freeze, kill, OOM and stats.

On a cgroup v1 or hybrid host (like the development machine) there is nothing safe to write to, so the
runtime degrades to no limits and logs a warning once; limits are still recorded in the spec. A hybrid host
still has a controller-less cgroup v2 tree at <root>/unified: the container gets a cgroup there too, only to
carry its device program (devices.py), which the kernel runs for the task's v2 cgroup on every host layout.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from pymachine_agent.runtime.spec import Limits

log = logging.getLogger("pymachine_agent.runtime.cgroups")
CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
_warned = False


def is_v2(root: str = "/sys/fs/cgroup") -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def shares_to_weight(shares: int) -> int:
    """runc's ConvertCPUSharesToCgroupV2Value: 2 -> 1, 1024 -> 100, 262144 -> 10000."""
    if shares <= 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    l = math.log2(shares)  # noqa: E741
    return math.ceil(10 ** ((l * l + 125 * l) / 612.0 - 7.0 / 34.0))


def limit_files(limits: Limits) -> dict[str, str]:
    """The cgroup v2 files (and values) that express `limits`; unset limits are reset to their default."""
    files: dict[str, str] = {}
    files["memory.max"] = str(limits.memory) if limits.memory > 0 else "max"
    if limits.memory > 0:
        if limits.memory_swap == -1:
            files["memory.swap.max"] = "max"
        elif limits.memory_swap > 0:
            files["memory.swap.max"] = str(max(limits.memory_swap - limits.memory, 0))
        else:  # Docker: swap defaults to the same amount as memory
            files["memory.swap.max"] = str(limits.memory)
    else:
        files["memory.swap.max"] = "max"
    files["memory.low"] = str(limits.memory_reservation) if limits.memory_reservation > 0 else "0"
    period = limits.cpu_period or 100000
    if limits.nano_cpus > 0:
        files["cpu.max"] = f"{limits.nano_cpus * period // 1_000_000_000} {period}"
    elif limits.cpu_quota > 0:
        files["cpu.max"] = f"{limits.cpu_quota} {period}"
    else:
        files["cpu.max"] = f"max {period}"
    weight = limits.cpu_weight or shares_to_weight(limits.cpu_shares) or 100
    files["cpu.weight"] = str(weight)
    if limits.cpuset_cpus:
        files["cpuset.cpus"] = limits.cpuset_cpus
    files["pids.max"] = str(limits.pids_limit) if limits.pids_limit > 0 else "max"
    if limits.io_weight > 0:  # blkio weight 10..1000 -> io.weight 1..10000 (runc's linear mapping)
        files["io.weight"] = f"default {1 + (limits.io_weight - 10) * 9999 // 990}"
    return files


class Cgroup:
    """The cgroup of one container. Every method is a no-op (or returns empty data) when `enabled` is
    False, i.e. on a host without a pure cgroup v2 hierarchy."""

    def __init__(self, container_id: str, root: str = "/sys/fs/cgroup", parent: str = "pymachine") -> None:
        self.root = Path(root)
        self.parent = self.root / parent
        self.path = self.parent / container_id
        self.enabled = is_v2(root)
        unified = self.root if self.enabled else self.root / "unified"
        # where the device program is attached and where processes join (None: no cgroup v2 at all)
        self.v2_path: Path | None = unified / parent / container_id if is_v2(str(unified)) else None

    def _warn(self) -> None:
        global _warned
        if not _warned:
            _warned = True
            log.warning("cgroup v2 is not mounted at %s: container limits are not enforced", self.root)

    def _write(self, name: str, value: str, path: Path | None = None) -> None:
        with open((path or self.path) / name, "w") as f:
            f.write(value)

    def read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def create(self, limits: Limits) -> None:
        if not self.enabled:
            if limits != Limits():
                self._warn()
            if self.v2_path is not None:
                try:
                    self.v2_path.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    log.warning("cannot create %s: %s", self.v2_path, e)
                    self.v2_path = None
            return
        available = set((self.root / "cgroup.controllers").read_text().split())
        wanted = " ".join(f"+{c}" for c in CONTROLLERS if c in available)
        self.parent.mkdir(exist_ok=True)
        for level in (self.root, self.parent):
            try:
                self._write("cgroup.subtree_control", wanted, level)
            except OSError as e:  # e.g. a controller the kernel refuses here; enable what we can
                for c in wanted.split():
                    try:
                        self._write("cgroup.subtree_control", c, level)
                    except OSError:
                        log.warning("cannot enable %s in %s: %s", c, level, e)
        self.path.mkdir(exist_ok=True)
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        if not self.enabled:
            return
        for name, value in limit_files(limits).items():
            if not (self.path / name).exists():
                if name not in ("memory.swap.max", "io.weight", "cpuset.cpus", "memory.low"):
                    log.warning("%s missing in %s: limit not applied", name, self.path)
                continue
            self._write(name, value)

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0 = the caller) into the cgroup."""
        if self.v2_path is not None:
            self._write("cgroup.procs", str(pid), self.v2_path)

    def pids(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def freeze(self, frozen: bool) -> None:
        self._write("cgroup.freeze", "1" if frozen else "0")
        want = "frozen 1" if frozen else "frozen 0"
        for _ in range(200):  # the kernel freezes asynchronously; cgroup.events says when it is done
            if want in self.read("cgroup.events"):
                return
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        for line in self.read("memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value or 0) > 0:
                return True
        return False

    def kill_all(self) -> None:
        if self.v2_path is None or not self.v2_path.exists():
            return
        try:
            self._write("cgroup.kill", "1", self.v2_path)
        except OSError:  # kernels before 5.14
            import signal

            for pid in [int(p) for p in (self.v2_path / "cgroup.procs").read_text().split()]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self) -> None:
        if self.v2_path is None or not self.v2_path.exists():
            return
        for _ in range(100):
            try:
                self.v2_path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # still busy: processes are exiting
                self.kill_all()
                time.sleep(0.02)
        log.warning("could not remove cgroup %s", self.v2_path)

    def _kv(self, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.read(name).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
        return out

    def stats(self) -> dict:
        """Docker's stats shape (cpu_stats, memory_stats, pids_stats, blkio_stats) from the cgroup files."""
        cpu = self._kv("cpu.stat")
        mem = self._kv("memory.stat")
        usage = int(self.read("memory.current") or 0)
        max_raw = self.read("memory.max").strip()
        limit = int(max_raw) if max_raw.isdigit() else _host_memory()
        pids_max = self.read("pids.max").strip()
        io: list[dict] = []
        for line in self.read("io.stat").splitlines():
            dev, *fields = line.split()
            major, _, minor = dev.partition(":")
            kv = dict(f.split("=", 1) for f in fields if "=" in f)
            for op, key in (("read", "rbytes"), ("write", "wbytes")):
                io.append({"major": int(major), "minor": int(minor), "op": op, "value": int(kv.get(key, 0))})
        online = os.cpu_count() or 1
        return {
            "read": "",
            "pids_stats": {
                "current": len(self.pids()),
                **({"limit": int(pids_max)} if pids_max.isdigit() else {}),
            },
            "blkio_stats": {"io_service_bytes_recursive": io or None},
            "cpu_stats": {
                "cpu_usage": {
                    "total_usage": cpu.get("usage_usec", 0) * 1000,
                    "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
                    "usage_in_usermode": cpu.get("user_usec", 0) * 1000,
                },
                "system_cpu_usage": _system_cpu_ns(),
                "online_cpus": online,
                "throttling_data": {
                    "periods": cpu.get("nr_periods", 0),
                    "throttled_periods": cpu.get("nr_throttled", 0),
                    "throttled_time": cpu.get("throttled_usec", 0) * 1000,
                },
            },
            "memory_stats": {"usage": usage, "limit": limit, "stats": mem} if self.enabled else {},
        }


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _system_cpu_ns() -> int:
    """Sum of all CPU time of the machine (as Docker computes system_cpu_usage), in nanoseconds."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
        return sum(int(x) for x in fields) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0
