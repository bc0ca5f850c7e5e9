"""Host folders in the VM: which transport serves them, the virtiofsd daemons, what the guest is told.

Transports, picked from the driver's capability flags (never its name) and the machine's `share_transport`:
- virtiofs: one virtiofsd per share (QEMU 7.2's C daemon), started here (not by libvirt) with its vhost-user
  socket in the machine folder, so that it runs as the share's owner: inside a user namespace where only the
  owner's own uid and gid are mapped (as themselves), with every guest uid's request served as the owner
  (virtiofs_squash), so what any container user creates belongs to the owner on the host. Its own mount
  namespace bind-mounts a read-only share read-only (C virtiofsd has no read-only option; the guest's `ro`
  mount alone would not stop guest root). It exits when QEMU closes the socket; `stop_daemons` ends it
  otherwise.
- 9p: served by QEMU itself (security_model=mapped-xattr) as QEMU's own user; readonly enforced by QEMU.
- sshfs: mounted later by the host agent over the machine's SSH link (not set up here).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import paths, store
from .config import MachineConfig
from .domain import ShareDevice
from .errors import PymachineError, UsageError

log = logging.getLogger(__name__)
TRANSPORTS = ("virtiofs", "9p", "sshfs")  # auto tries them in this order
VIRTIOFSD_PATHS = ("/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/virtiofsd")
SOCKET_WAIT_S = 15.0
# How virtiofsd serves every share: why, and what the others cost, in docs/machines.md "virtiofsd options".
# cache=always: the guest keeps names, attributes, listings and file pages; a host change to a path that a
# running container binds is taken afresh in the guest at once (the change events, the guest agent's
# revalidate.py); anything else is trusted for at most CACHE_TIMEOUT_S (virtiofsd's entry and attr timeout).
CACHE_TIMEOUT_S = 30
VIRTIOFSD_OPTIONS = (
    "-o", "cache=always", "-o", f"timeout={CACHE_TIMEOUT_S}", "-o", "sandbox=namespace", "-o", "no_xattr",
)  # fmt: skip
# What the guest image's kernel can mount. Debian's cloud kernel (linux-image-cloud-amd64, our image) ships
# fs/fuse/virtiofs.ko but no 9p at all (no 9p.ko, no 9pnet_virtio.ko: CONFIG_NET_9P is off in that flavour;
# a 9p mount in the guest fails with ENODEV). sshfs is FUSE, which it has. An image with the generic kernel
# would add "9p" here.
GUEST_TRANSPORTS = frozenset({"virtiofs", "sshfs"})


def virtiofsd_binary() -> str | None:
    """The virtiofsd to run (PYMACHINE_VIRTIOFSD wins), or None when this host has none."""
    override = os.environ.get("PYMACHINE_VIRTIOFSD")
    if override is not None:
        return override if override and os.access(override, os.X_OK) else None
    if not sys.platform.startswith("linux"):
        return None
    found = next((p for p in VIRTIOFSD_PATHS if os.access(p, os.X_OK)), None)
    return found or shutil.which("virtiofsd")


def choose_transport(capabilities: object, wanted: str, guest: frozenset[str] = GUEST_TRANSPORTS) -> str:
    """(driver capabilities, share_transport) → virtiofs | 9p | sshfs. `auto`: the first that both the driver
    and the guest kernel (`guest`) can do; sshfs needs only the machine's SSH link, so it is always possible
    (the host agent mounts it after boot). An explicit choice that cannot work is an error naming what can."""
    able = {
        "virtiofs": bool(getattr(capabilities, "virtiofs", False)) and "virtiofs" in guest,
        "9p": bool(getattr(capabilities, "virtio_9p", False)) and "9p" in guest,
        "sshfs": True,
    }
    if wanted in ("", "auto"):
        return next(t for t in TRANSPORTS if able[t])
    if wanted not in able:
        raise UsageError(
            f"unknown share transport '{wanted}'", hint=f"use one of auto, {', '.join(TRANSPORTS)}"
        )
    if not able[wanted]:
        can = ", ".join(t for t in TRANSPORTS if able[t])
        who = "the guest image's kernel" if wanted not in guest else "this machine's driver"
        raise UsageError(
            f"{who} cannot share folders over {wanted} here",
            hint=f"it can do: {can} (set share_transport to auto)",
        )
    return wanted


def devices(cfg: MachineConfig, transport: str) -> list[ShareDevice]:
    folder = daemon_dir(cfg.name)
    return [
        ShareDevice(
            tag=f"pm{i}",
            path=s.path,
            readonly=s.readonly,
            # a sync share is a copy on the VM's disk, made by the host agent: no device, nothing to mount
            transport="sync" if s.sync else transport,
            socket=str(folder / f"pm{i}.sock") if transport == "virtiofs" and not s.sync else "",
        )
        for i, s in enumerate(cfg.shares)
    ]


def daemon_dir(name: str) -> Path:
    return paths.machine(name).dir / "virtiofs"


# -- virtiofsd ---------------------------------------------------------------------------------------------
def virtiofsd_argv(dev: ShareDevice, binary: str, owner: int, as_root: bool) -> list[str]:
    """The command that serves `dev` (unit-tested). virtiofsd runs in a mount namespace of its own (its lock
    folder /run/virtiofsd becomes a private tmpfs; a read-only share is bind-mounted read-only), and, unless
    root serves a root-owned share, in a user namespace of the owner with the uid squash."""
    src = shlex.quote(dev.path)
    script = ["mount -t tmpfs -o mode=0700 pm-virtiofsd /run"]
    if dev.readonly:
        script += [f"mount --bind {src} {src}", f"mount -o remount,bind,ro {src} {src}"]
    daemon = [
        binary,
        f"--socket-path={dev.socket}",
        "-o", f"source={dev.path}",
        *VIRTIOFSD_OPTIONS,
        f"--rlimit-nofile={nofile_limit()}",
    ]  # fmt: skip
    script.append("exec " + shlex.join(daemon))
    body = ["/bin/sh", "-c", " && ".join(script)]
    if owner == 0 and as_root:
        return ["unshare", "--mount", "--propagation", "private", "--", *body]
    # The user (the owner, when pymachine is root and becomes the owner first) keeps its own uid and gid in
    # the namespace, the only ids mapped, with its capabilities there (--keep-caps: virtiofsd needs them for
    # its sandbox and to reach every file of the owner): the guest sees the owner's files as the owner's uid,
    # as over sshfs and in Lima. Every guest uid's requests run as the owner: C virtiofsd would switch to the
    # guest uid, which has no mapping here (EINVAL), and virtiofs_squash turns that switch into a no-op.
    uid, gid = (owner, os.stat(dev.path).st_gid) if as_root else (os.getuid(), os.getgid())
    ns = ["unshare", f"--map-user={uid}", f"--map-group={gid}", "--keep-caps", "--mount"]
    squash = [sys.executable, "-m", "pymachine.hostvm.virtiofs_squash"]
    if as_root:
        squash += [f"--uid={uid}", f"--gid={gid}"]
    return [*squash, "--", *ns, "--propagation", "private", "--", *body]


def nofile_limit() -> int:
    """C virtiofsd holds an O_PATH fd per inode the guest knows (a 10k-file walk needs 10k): as many as the
    hard limit allows without privilege (its own default asks for 1,000,000, which a user cannot raise to)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1_000_000 if hard == resource.RLIM_INFINITY else min(hard, 1_000_000)


def start_daemons(
    name: str, devs: list[ShareDevice], qemu_account: object | None = None, others: bool = False
) -> None:
    """Start one virtiofsd per virtiofs share and wait for each socket; on any failure stop them all.
    `others`: the machine's other daemons keep running (a failed save plugs back the devices it unplugged,
    whose daemons exited with the unplug)."""
    wanted = [d for d in devs if d.transport == "virtiofs"]
    if not others:
        stop_daemons(name)
    if not wanted:
        return
    binary = virtiofsd_binary()
    if binary is None:
        raise PymachineError(
            "virtiofsd is not installed", hint="install qemu-system-x86 (or set share_transport 9p)"
        )
    folder = daemon_dir(name)
    folder.mkdir(mode=0o700, exist_ok=True)
    as_root = os.geteuid() == 0
    pids: dict[str, int] = (store.read_json(folder / "pids.json", {}) or {}) if others else {}
    try:
        for dev in wanted:
            paths.check_socket_path(Path(dev.socket))
            Path(dev.socket).unlink(missing_ok=True)  # an exited daemon's: its presence means "listening"
            st = os.stat(dev.path)
            owner = st.st_uid
            if as_root and owner != 0:
                _let_owner_create_socket(folder, owner, st.st_gid)
            logf = folder / f"{dev.tag}.log"
            with open(logf, "wb") as out:
                child = subprocess.Popen(
                    virtiofsd_argv(dev, binary, owner, as_root),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives this CLI process; ends with QEMU's connection
                    close_fds=True,
                )
            pids[dev.tag] = child.pid
            store.write_json(folder / "pids.json", pids)
            _wait_socket(dev, child, logf)
            if qemu_account is not None:
                from . import qemu_user

                qemu_user.grant(qemu_account, readable=[], writable=[dev.socket])  # type: ignore[arg-type]
    except BaseException:
        stop_daemons(name)
        raise


def _let_owner_create_socket(folder: Path, owner: int, group: int) -> None:
    from . import qemu_user

    who = qemu_user.Account(name=f"uid {owner}", uid=owner, gid=group)
    qemu_user.grant_folder(who, folder)


def _wait_socket(dev: ShareDevice, child: subprocess.Popen[bytes], logf: Path) -> None:
    deadline = time.monotonic() + SOCKET_WAIT_S
    while time.monotonic() < deadline:
        if os.path.exists(dev.socket):
            return
        if child.poll() is not None:
            break
        time.sleep(0.05)
    tail = logf.read_text(errors="replace").strip().splitlines()[-3:]
    raise PymachineError(
        f"virtiofsd for {dev.path} did not start" + (f": {' / '.join(tail)}" if tail else ""),
        hint=f"see {logf}; or share over another transport: pymachine mount transport NAME 9p",
        log_path=str(logf),
    )


def daemon_status(name: str) -> dict[str, int | None]:
    """tag → pid of its running virtiofsd, or None for one that exited (crashed, or its QEMU is gone)."""
    folder = daemon_dir(name)
    pids = store.read_json(folder / "pids.json", {}) or {}
    return {tag: (pid if _is_ours(pid, folder) else None) for tag, pid in pids.items()}


def _is_ours(pid: int, folder: Path) -> bool:
    """The pid still runs and is one of this machine's daemons (its command line names our socket folder)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(folder).encode() in cmdline


def stop_daemons(name: str) -> None:
    """End every virtiofsd of this machine (their whole process groups) and remove their sockets."""
    folder = daemon_dir(name)
    recorded = list((store.read_json(folder / "pids.json", {}) or {}).values())
    pids = [pid for pid in daemon_status(name).values() if pid]
    for pid in pids:
        with _ignore_gone():
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _is_ours(p, folder)]
        time.sleep(0.05)
    for pid in pids:
        with _ignore_gone():
            os.killpg(pid, signal.SIGKILL)
    for pid in recorded:  # started by this process (tests, the GUI): reap them, or they stay zombies
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if folder.is_dir():
        for leftover in folder.glob("*.sock"):
            leftover.unlink(missing_ok=True)
        (folder / "pids.json").unlink(missing_ok=True)


class _ignore_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError | PermissionError)


def problems(name: str, running: bool) -> list[str]:
    """What is wrong with this machine's shares right now, for `list` and `doctor`."""
    if not running:
        return []
    return [f"virtiofsd {tag} exited" for tag, pid in daemon_status(name).items() if pid is None]


def guest_entries(devs: list[ShareDevice]) -> list[dict[str, object]]:
    return [d.guest() for d in devs]


def describe(cfg: MachineConfig, transport: str) -> list[dict[str, object]]:
    """For `inspect` and `mount list`."""
    return [{**asdict(s), "transport": "sync" if s.sync else transport} for s in cfg.shares]


def stored_transport(name: str) -> str | None:
    """The transport the running machine was started with (state.json), else None."""
    return (store.read_json(paths.machine(name).state, {}) or {}).get("share_transport")


def dumps(devs: list[ShareDevice]) -> str:
    return json.dumps(guest_entries(devs), sort_keys=True)
