"""Container sysctls: only the keys that live in a namespace the container owns alone, as Docker allows.

A sysctl outside a namespace is the VM's own: `kernel.core_pattern=|/proc/%P/root/x` makes the VM's kernel
run a file of the container as root of the VM on the next crash. Docker's (runc's) allowed set is the IPC
namespace's keys (kernel.msgmax, msgmnb, msgmni, sem, shmall, shmmax, shmmni, shm_rmid_forced, fs.mqueue.*)
and the network namespace's (net.*). We accept them only when the namespace is the container's own: net.* is
refused with `--network host` (as Docker) and `--network container:X` (the other container's settings; runc
would write them), the IPC keys with `--ipc host` or `--ipc container:X`. Checked twice: at create (a 400
naming the key) and by the writer right before it writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

IPC_KEYS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
    "kernel.shmmni", "kernel.shm_rmid_forced",
})  # fmt: skip


class SysctlError(ValueError):
    """A sysctl the container may not set; the message names the key."""


def namespace_of(key: str) -> str | None:
    """ "ipc" or "net" for a namespaced key, None for one that belongs to the whole VM."""
    if key in IPC_KEYS or key.startswith("fs.mqueue."):
        return "ipc"
    if key.startswith("net."):
        return "net"
    return None


def check(sysctls: Mapping[str, str], private_net: bool, private_ipc: bool) -> None:
    """Raise SysctlError for the first key that is not namespaced or whose namespace is shared."""
    for key in sysctls:
        ns = namespace_of(key)
        if ns is None:
            raise SysctlError(
                f"sysctl {key!r} is not allowed: it is not in a separate kernel namespace (only net.*, "
                "fs.mqueue.* and the kernel.msg*/sem/shm* keys of the IPC namespace can be set per container)"
            )
        if ns == "net" and not private_net:
            raise SysctlError(
                f"sysctl {key!r} is not allowed: the container shares a network namespace (--network host or "
                "container:...), and the setting would change that namespace, not the container's own"
            )
        if ns == "ipc" and not private_ipc:
            raise SysctlError(
                f"sysctl {key!r} is not allowed: the container shares an IPC namespace (--ipc host or "
                "container:...), and the setting would change that namespace, not the container's own"
            )
        sysctl_path(key)


def sysctl_path(key: str) -> str:
    """/proc/sys path of `key`; as in sysctl(8), a `/` in a component stands for a `.`
    (net.ipv4.conf.eth0/100.forwarding is /proc/sys/net/ipv4/conf/eth0.100/forwarding)."""
    parts = [p.replace("/", ".") for p in key.split(".")]
    if any(p in ("", ".", "..") for p in parts):
        raise SysctlError(f"sysctl {key!r} is not a valid sysctl name")
    return "/proc/sys/" + "/".join(parts)


def write(sysctls: Mapping[str, str], private_net: bool, private_ipc: bool) -> None:
    """Write the container's sysctls into its own /proc (after pivot_root), refusing what `check` refuses."""
    check(sysctls, private_net, private_ipc)
    for key, value in sysctls.items():
        fd = os.open(sysctl_path(key), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
