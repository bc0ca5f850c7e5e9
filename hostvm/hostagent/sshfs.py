"""Reverse sshfs: host folders mounted in the guest over the machine's own SSH link, served from the host.

For hosts with neither virtiofs nor 9p (Windows, a remote host) and for `share_transport: sshfs`. Per share,
the host agent opens an exec channel that runs, as root in the guest, `sshfs -o passive :PATH PATH`: sshfs
speaks SFTP on its stdin/stdout, which is the channel, and the host agent answers on the channel's other end
with an SFTP server confined to the share (sftpshare.py), in its own process, as its own user. So nothing
listens anywhere, no key or password is involved, and the guest can reach only the listed folders.

Lifecycle: mounted right after the link comes up and before the agent reports ready (so a container never
binds an empty folder), mounted again after a reconnect (the old FUSE mount died with its channel; it is
lazily unmounted first), unmounted at stop. A failure is a `share` event with the reason and shows in the
agent's status (`pymachine inspect`). Containers that were running across a reconnect keep a bind of the
dead mount and must be restarted to see the new one (as with Lima's reverse-sshfs).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paramiko

from .sftpshare import Root, ShareServer

log = logging.getLogger(__name__)
MOUNT_TIMEOUT = 60.0  # sshfs starts in well under a second; the bound is for a TCG guest on a loaded host
PID_DIR = "/run/pymachine-sshfs"
# Caching: sshfs keeps its own stat/dir cache (20 s by default) on top of the kernel's 1 s attribute cache;
# 20 s would hide a host-side edit from a dev server for that long, so its caches follow the kernel's.
# `auto_cache` drops a file's cached pages when its size or mtime changed at open (a host edit), instead of
# `kernel_cache`, which would keep serving stale pages. No `follow_symlinks`: links stay links, resolved by
# the guest kernel in the guest (the host server never follows them out of the share either).
BASE_OPTIONS = (
    "passive",
    "allow_other",
    "nosuid",
    "nodev",
    "noatime",
    "auto_cache",
    "dcache_timeout=1",
    "max_read=131072",
)


def mount_options(readonly: bool) -> list[str]:
    return [*BASE_OPTIONS, "fsname=pymachine-share", *(["ro"] if readonly else [])]


def _pid_file(path: str) -> str:
    return f"{PID_DIR}/{hashlib.sha256(path.encode()).hexdigest()[:16]}.pid"


# Unmount whatever sshfs mounts sit at "$P" (a dead one from before a reconnect answers ENOTCONN, so test the
# mount table, not the folder), after ending the sshfs that served it.
_UNMOUNT = (
    '[ -r "$F" ] && kill "$(cat "$F")" 2>/dev/null; rm -f "$F"; '
    'while [ "$(findmnt -rn -M "$P" -o FSTYPE | tail -n1)" = fuse.sshfs ]; do umount -l "$P" || break; done'
)

# On a cold boot the guest's init loads the engine's modules, fuse among them, only once the guest agent
# answers, which is also when this host agent links up and mounts: without udev, /dev/fuse appears only once
# the module is in, so load it here (a no-op when it is; two concurrent loads of one module both succeed).
_LOAD_FUSE = "[ -e /dev/fuse ] || /usr/sbin/modprobe fuse"


def mount_command(path: str, readonly: bool) -> str:
    """The guest shell command for one share: clear an old mount, then become sshfs on the channel's stdio.
    `pid N` on stderr tells the host the old mount is gone and which process serves the new one."""
    opts = ",".join(mount_options(readonly))
    return (
        f"P={shlex.quote(path)}; F={_pid_file(path)}; mkdir -p {PID_DIR}; {_LOAD_FUSE}; {_UNMOUNT}; "
        f'mkdir -p "$P" && echo $$ > "$F" && echo "pid $$" >&2 && exec sshfs -f -o {opts} ":$P" "$P"'
    )


def unmount_command(path: str) -> str:
    return f"P={shlex.quote(path)}; F={_pid_file(path)}; {_UNMOUNT}"


def check_command(path: str) -> str:
    return f"findmnt -rn -M {shlex.quote(path)} -o FSTYPE | tail -n1"


@dataclass
class Mount:
    path: str
    readonly: bool
    state: str = "pending"  # pending | mounting | mounted | failed | lost | unmounted
    error: str | None = None
    mounted_at: float | None = None
    mounts: int = 0
    stderr: list[str] = field(default_factory=list)
    chan: paramiko.Channel | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "readonly": self.readonly,
            "transport": "sshfs",
            "state": self.state,
            "error": self.error,
            "mounted_at": self.mounted_at,
            "mounts": self.mounts,
        }


Run = Callable[[paramiko.Transport, str], str]


class SshfsShares:
    """The machine's sshfs shares: mounted on every link-up, reported in status, unmounted at stop."""

    def __init__(self, run: Run, on_event: Callable[..., None], timeout: float = MOUNT_TIMEOUT) -> None:
        self._run = run
        self._emit = on_event
        self.timeout = timeout
        self._lock = threading.Lock()
        self.mounts: dict[str, Mount] = {}

    def add(self, path: str, readonly: bool) -> Mount:
        with self._lock:
            m = self.mounts.get(path)
            if m is None or m.readonly != readonly:
                m = self.mounts[path] = Mount(path, readonly)
            return m

    def snapshot(self) -> list[dict[str, Any]]:
        return [m.snapshot() for m in self.mounts.values()]

    def mount_all(self, transport: paramiko.Transport) -> None:
        for m in list(self.mounts.values()):
            if m.state != "unmounted":
                self.mount(transport, m)

    def mount(self, transport: paramiko.Transport, m: Mount) -> Mount:
        m.state, m.error, m.stderr = "mounting", None, []
        try:
            if not os.path.isdir(m.path):
                raise FileNotFoundError(f"the host folder {m.path} does not exist")
            root = Root.of(m.path, m.readonly)
            chan = transport.open_session(timeout=10)
            m.chan = chan
            chan.exec_command(mount_command(m.path, m.readonly))
            threading.Thread(target=self._stderr, args=(m, chan), name="sshfs-err", daemon=True).start()
            server = ShareServer(chan, root)
            threading.Thread(
                target=self._serve, args=(m, chan, server), name="sshfs-sftp", daemon=True
            ).start()
            self._wait_mounted(transport, m, chan)
        except Exception as exc:  # noqa: BLE001 - any failure is reported as this share's state
            return self._failed(m, str(exc) or type(exc).__name__)
        m.state, m.mounted_at, m.mounts = "mounted", time.time(), m.mounts + 1
        self._emit(path=m.path, state="mounted", transport="sshfs", readonly=m.readonly)
        return m

    def _wait_mounted(self, transport: paramiko.Transport, m: Mount, chan: paramiko.Channel) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if chan.exit_status_ready():
                raise OSError(self._why(m, chan.recv_exit_status()))
            # Before `pid N` the old mount may still be in the table: only then is the answer about ours.
            started = any(line.startswith("pid ") for line in m.stderr)
            if started and self._run(transport, check_command(m.path)).strip() == "fuse.sshfs":
                return
            time.sleep(0.1)
        chan.close()
        raise TimeoutError(f"sshfs did not mount {m.path} within {self.timeout:.0f} s")

    def _why(self, m: Mount, status: int) -> str:
        text = "; ".join(line for line in m.stderr if not line.startswith("pid ")).strip()
        if status == 127:
            return "the guest has no sshfs (the machine's image predates reverse-sshfs: recreate the machine)"
        return f"sshfs exited with status {status}" + (f": {text}" if text else "")

    def _stderr(self, m: Mount, chan: paramiko.Channel) -> None:
        f = chan.makefile_stderr("rb")
        for raw in f:
            m.stderr.append(raw.decode(errors="replace").rstrip())
            del m.stderr[:-20]

    def _serve(self, m: Mount, chan: paramiko.Channel, server: ShareServer) -> None:
        try:
            server.serve()
        finally:
            chan.close()
            if m.chan is chan and m.state == "mounted":
                # sshfs exited or the link went: the FUSE mount in the guest is dead until the next mount.
                m.state, m.error = "lost", "the SSH link or sshfs ended; mounted again on reconnect"
                self._emit(path=m.path, state="lost", transport="sshfs", error=m.error)

    def _failed(self, m: Mount, error: str) -> Mount:
        m.state, m.error = "failed", error
        self._emit(path=m.path, state="failed", transport="sshfs", error=error)
        return m

    def unmount(self, transport: paramiko.Transport | None, path: str, forget: bool = False) -> None:
        m = self.mounts.get(path)
        if m is None:
            return
        m.state = "unmounted"
        if transport is not None:
            try:
                self._run(transport, unmount_command(path))
            except (paramiko.SSHException, OSError) as exc:
                log.info("unmounting %s: %s", path, exc)
        if m.chan is not None:
            m.chan.close()
        if forget:
            with self._lock:
                self.mounts.pop(path, None)
        self._emit(path=path, state="unmounted", transport="sshfs")

    def unmount_all(self, transport: paramiko.Transport | None) -> None:
        for path in list(self.mounts):
            self.unmount(transport, path)
