"""The host's device shares (virtiofs, 9p) around a save, unmounted and mounted again by the agent itself.

A saved state cannot carry virtiofsd's side of a virtiofs device (QEMU refuses to migrate it) nor a mounted
9p export, so a saving stop unmounts the device shares and unplugs the virtiofs devices, and the resume plugs
them in again and mounts them once the kernel has probed them. Both were shell scripts run over an SSH exec (a
session, a shell, `umount`/`mount` forked in an emulated guest): 0.4-0.9 s of each saving stop, and 0.3-0.45 s
of each resume after the host agent's link came up, in a guest whose translation cache the restore had just
emptied. Here the agent, running and warm, does the same with sync(2), umount(2) and mount(2), asked on the
channel the host agent already has (`POST /pymachine/v1/quiesce`, `POST /pymachine/v1/remount`).

`quiesce` refuses (and leaves every share mounted) when a process in another mount namespace (a container's
bind mount) has a share mounted, or one cannot come off (an open file): unplugging it then would leave that
mount dead. `remount` mounts each as the init mounts it at boot (pminit.shares): at its own path,
nosuid,nodev, ro when read-only, virtiofs with its 4 MiB readahead; one still mounted is left as it is. Only
paths of this agent's share list are accepted (protocol.parse_device_shares): a request cannot mount a host
folder elsewhere in the guest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from . import mountinfo
from .protocol import DeviceShare
from .runtime import libc

NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288,cache=mmap"  # as pminit mounts it
VIRTIOFS_READAHEAD_KB = 4096  # pminit's: sequential reads 0.36x -> 0.99x native (docs/machines.md)
RETRY_S = 0.05  # a re-plugged device is probed within a second or two under TCG: asked again this often


def mount_share(share: DeviceShare) -> None:
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


def is_mounted(share: DeviceShare) -> bool:
    return (share.path, share.transport) in mountinfo.mounts()


def remount(
    shares: Iterable[DeviceShare],
    wait_s: float,
    *,
    mount: Callable[[DeviceShare], None] | None = None,
    mounted: Callable[[DeviceShare], bool] | None = None,
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


def share_holder(proc: str = "/proc") -> int | None:
    """A process in a mount namespace other than init's whose mounts include a virtiofs or 9p one (a
    container with a share's folder bind-mounted), or None."""
    init = os.stat(f"{proc}/1/ns/mnt")
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"{entry.path}/ns/mnt")  # a kernel thread has none
            if (ns.st_dev, ns.st_ino) == (init.st_dev, init.st_ino):
                continue
            with open(f"{entry.path}/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
                if any(" - virtiofs " in line or " - 9p " in line for line in fh):
                    return int(entry.name)
        except OSError:  # it exited meanwhile
            continue
    return None


def quiesce(
    shares: Iterable[DeviceShare],
    *,
    sync: Callable[[], None] = os.sync,
    holder: Callable[[], int | None] | None = None,
    mounted: Callable[[DeviceShare], bool] | None = None,
    umount: Callable[[str], None] | None = None,
    mount: Callable[[DeviceShare], None] | None = None,
) -> str | None:
    """Before a save: flush the page cache, then unmount each share. None when they are off; else why not,
    with any share it had unmounted mounted again."""
    holder, mounted, mount = holder or share_holder, mounted or is_mounted, mount or mount_share
    umount = umount or libc.umount2
    sync()
    pid = holder()
    if pid is not None:
        return f"a container (pid {pid}) uses a shared folder"
    done: list[DeviceShare] = []
    for share in shares:
        if not mounted(share):
            continue
        try:
            umount(share.path)
        except OSError as exc:
            for back in done:
                try:
                    mount(back)
                except OSError:  # the save is refused anyway; `start` reports a share that is missing
                    pass
            return f"{share.path} is busy in the VM: {exc.strerror or exc}"
        done.append(share)
    return None
