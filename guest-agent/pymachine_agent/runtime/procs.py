"""The processes of a container, for `docker top` and pause on hosts without cgroup v2."""

from __future__ import annotations

import os
import pwd
import time

from pymachine_agent.runtime.namespaces import same_pid_namespace


def container_pids(init_pid: int, cgroup_procs: list[int] | None) -> list[int]:
    """Host pids of the container's processes: from its cgroup when it has one, else every process that
    shares the init's pid namespace (or the init alone, for --pid=host)."""
    if cgroup_procs:
        return sorted(cgroup_procs)
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and same_pid_namespace(int(name), init_pid):
            out.append(int(name))
    host_ns = same_pid_namespace(init_pid, os.getpid())
    return [init_pid] if host_ns else sorted(out)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    return raw[raw.rfind(")") + 2 :].split()


def top(pids: list[int]) -> dict:
    """`ps -ef` columns for `pids`, in Docker's top shape."""
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    boot = time.time() - uptime
    rows = []
    for pid in pids:
        try:
            st = _stat(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        try:
            uname = pwd.getpwuid(uid).pw_name
        except KeyError:
            uname = str(uid)
        cpu_secs = (int(st[11]) + int(st[12])) // ticks
        started = boot + int(st[19]) / ticks
        age = max(time.time() - started, 1)
        rows.append([
            uname, str(pid), st[1], str(int(100 * cpu_secs / age)),
            time.strftime("%H:%M", time.localtime(started)), "?",
            time.strftime("%H:%M:%S", time.gmtime(cpu_secs)), cmd or f"[{st[0]}]",
        ])  # fmt: skip
    return {"Titles": titles, "Processes": rows}
