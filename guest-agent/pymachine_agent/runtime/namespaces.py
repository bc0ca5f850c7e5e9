"""Which namespaces a container gets, and joining a running container's namespaces (for exec)."""

from __future__ import annotations

import os

from pymachine_agent.runtime import libc
from pymachine_agent.runtime.spec import ContainerSpec

NS_FLAGS = {
    "ipc": libc.CLONE_NEWIPC,
    "uts": libc.CLONE_NEWUTS,
    "net": libc.CLONE_NEWNET,
    "pid": libc.CLONE_NEWPID,
    "cgroup": libc.CLONE_NEWCGROUP,
    "mnt": libc.CLONE_NEWNS,
}


def unshare_flags(spec: ContainerSpec, cgroup_v2: bool) -> int:
    """Namespaces the container's init creates for itself (the pid namespace is made by the supervisor,
    because it only applies to children)."""
    flags = libc.CLONE_NEWNS
    if spec.uts == "private":
        flags |= libc.CLONE_NEWUTS
    if spec.ipc in ("private", "shareable"):
        flags |= libc.CLONE_NEWIPC
    if spec.network in ("new", "none"):
        flags |= libc.CLONE_NEWNET
    if cgroup_v2 and spec.cgroupns == "private":
        flags |= libc.CLONE_NEWCGROUP
    return flags


def join_paths(spec: ContainerSpec) -> list[tuple[str, int]]:
    """Existing namespaces (path, nstype) the container joins instead of creating its own."""
    out = []
    if spec.network not in ("new", "none", "host"):
        out.append((spec.network, libc.CLONE_NEWNET))
    if spec.ipc not in ("private", "shareable", "host"):
        out.append((spec.ipc, libc.CLONE_NEWIPC))
    return out


def join(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(fd, nstype)
    finally:
        os.close(fd)


def open_container_namespaces(pid: int) -> list[tuple[int, int]]:
    """Open the namespaces of a running container's init that differ from ours, mount last (setns into the
    mount namespace moves our root, after which /proc/<pid> paths would no longer resolve)."""
    fds = []
    for name in ("cgroup", "ipc", "uts", "net", "pid", "mnt"):
        theirs = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
        except FileNotFoundError:
            continue
        fds.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), NS_FLAGS[name]))
    return fds


def same_pid_namespace(pid: int, other: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(f"/proc/{other}/ns/pid").st_ino
    except OSError:
        return False
