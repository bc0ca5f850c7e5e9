"""After a resume: the host's device shares mounted again by the agent itself (`POST /pymachine/v1/remount`).

A saving stop unmounts the virtiofs and 9p shares and unplugs their devices (a saved state cannot carry
virtiofsd's side); the resume plugs them in again, and something in the guest must mount them once the kernel
has probed the new devices. That was a shell script run over an SSH exec: a session, a shell and a `mount`
forked in a guest whose translation cache the restore had just emptied, 0.3-0.45 s after the host agent's
link came up, on the resume's critical path. Here the agent, running and warm, makes the same mounts with
mount(2): one request on the channel the host agent already has.

Each share is mounted as the init mounts it at boot (pminit.shares): at its own path, nosuid,nodev, ro when
read-only, virtiofs with its 4 MiB readahead. Only paths of this agent's share list are mounted (a request
cannot mount a host folder elsewhere in the guest), and one already mounted is left as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from . import mountinfo
from .protocol import RemountShare
from .runtime import libc

NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288,cache=mmap"  # as pminit mounts it
VIRTIOFS_READAHEAD_KB = 4096  # pminit's: sequential reads 0.36x -> 0.99x native (docs/machines.md)
RETRY_S = 0.05  # a re-plugged device is probed within a second or two under TCG: asked again this often


def mount_share(share: RemountShare) -> None:
    flags = libc.MS_NOSUID | libc.MS_NODEV | (libc.MS_RDONLY if share.readonly else 0)
    options = NINEP_OPTIONS if share.transport == "9p" else None
    libc.mount(share.tag, share.path, share.transport, flags, options)
    if share.transport == "virtiofs":
        try:
            dev = os.stat(share.path).st_dev
            with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as fh:
                fh.write(f"{VIRTIOFS_READAHEAD_KB}\n")
        except OSError:  # slower sequential reads, nothing worse
            pass


def is_mounted(share: RemountShare) -> bool:
    return (share.path, share.transport) in mountinfo.mounts()


def remount(
    shares: Iterable[RemountShare],
    wait_s: float,
    *,
    mount: Callable[[RemountShare], None] | None = None,
    mounted: Callable[[RemountShare], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str | None]:
    """Mount each share, retrying while its device is being probed, for up to `wait_s` in all: {path: None
    when it is mounted, else the last error}."""
    mount, mounted = mount or mount_share, mounted or is_mounted
    deadline = clock() + wait_s
    result: dict[str, str | None] = {}
    for share in shares:
        error: str | None = None
        while not mounted(share):
            try:
                mount(share)
                error = None
                break
            except OSError as exc:  # ENODEV/ENOENT: no device with that tag yet
                error = exc.strerror or str(exc)
            if clock() >= deadline:
                break
            sleep(RETRY_S)
        result[share.path] = error
    return result
