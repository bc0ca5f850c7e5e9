"""Capabilities: Docker's default set of 14, cap_add/cap_drop, and dropping the rest before exec."""

from __future__ import annotations

from pymachine_agent.runtime import libc

# Index = capability number (linux/capability.h).
CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
]  # fmt: skip

# moby oci/caps/defaults.go
DEFAULT_CAPS = [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
]  # fmt: skip


def _norm(name: str) -> str:
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAP_NAMES) - 1


def _current() -> int:
    """The engine's own effective set: what "all" can give (moby's caps.initCaps, for a sandboxed engine)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return -1


def resolve(cap_add: list[str], cap_drop: list[str], privileged: bool = False) -> int:
    """The capability mask Docker would give: defaults, minus cap_drop, plus cap_add ("ALL" allowed)."""
    everything = (1 << (min(last_cap(), len(CAP_NAMES) - 1) + 1)) - 1 & _current()
    if privileged:
        return everything
    adds = {_norm(c) for c in cap_add}
    drops = {_norm(c) for c in cap_drop}
    for name in (adds | drops) - {"ALL"}:
        if name not in CAP_NAMES:
            raise ValueError(f"unknown capability: {name!r}")
    mask = 0 if "ALL" in drops else sum(1 << CAP_NAMES.index(c) for c in DEFAULT_CAPS if c not in drops)
    if "ALL" in adds:
        return everything
    for name in adds:
        mask |= 1 << CAP_NAMES.index(name)
    return mask


def names(mask: int) -> list[str]:
    return [f"CAP_{n}" for i, n in enumerate(CAP_NAMES) if mask >> i & 1]


def drop_bounding(mask: int) -> None:
    """Drop every capability outside `mask` from the bounding set (needs CAP_SETPCAP, so call it as root
    before changing uid)."""
    for cap in range(last_cap() + 1):
        if not mask >> cap & 1:
            libc.prctl(libc.PR_CAPBSET_DROP, cap)


def apply(mask: int, uid: int, no_new_privs: bool = True) -> None:
    """Final capability state for the process that is about to exec as `uid` (already switched to it, with
    keepcaps set). Root keeps `mask` in every set; other users keep none (Docker without ambient caps)."""
    keep = mask if uid == 0 else 0
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    libc.capset(keep, keep, keep if uid == 0 else 0)
    if no_new_privs:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
