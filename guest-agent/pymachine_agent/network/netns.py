"""Doing work inside another network namespace without moving the agent.

setns(CLONE_NEWNET) changes the namespace of the calling *thread* only, so `run_in_netns` runs the function on
a short-lived thread that enters the target namespace and then dies: the agent's own threads never move.
Sockets (DNS listeners, netlink) keep the namespace they were created in, whoever uses them later.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_of(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def netns_id(path: str) -> int:
    """The namespace's inode: equal inodes = the same namespace (how we tell a reused pid)."""
    return os.stat(path).st_ino


def own_netns_id() -> int:
    return netns_id("/proc/thread-self/ns/net")


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run `fn()` on a thread inside the network namespace at `path`; return its result or raise its error."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            setns(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    try:
        worker = threading.Thread(target=body, name="netns-worker", daemon=True)
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    if error:
        raise error[0]
    return result[0]


def write_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/<path> ("net/ipv4/ip_forward") in the calling thread's network namespace."""
    with open("/proc/sys/" + path, "w") as fh:
        fh.write(value)
