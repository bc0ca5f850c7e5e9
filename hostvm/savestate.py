"""Saved machine state: `stop` writes the VM's RAM and devices to a file in the machine folder, `start`
resumes from it (about a second) instead of booting cold.

A state is only good for the VM it came from: the same guest image, guest agent, machine config (CPUs,
memory, shares, transport, driver) and accelerator. Anything else, or a file that is damaged or incomplete,
is thrown away and the machine boots cold, saying why in one line. The file is written under a temporary name
and renamed when complete, and the small JSON beside it (written last, atomically) carries its size and CRC:
a save cut short (kill -9 of QEMU, a full disk) leaves no state, only a temp file the next start removes.

Before the save the guest flushes its page cache (`sync`), so a state thrown away later costs nothing that a
container wrote. Host folders: virtio-9p and virtiofs devices block a save while mounted (QEMU:
"non-migratable device ... vhost-user-fs"). The guest unmounts them first (refused when a container holds
one: then the machine shuts down instead, with the reason), virtiofs devices are unplugged (the driver must
hot-plug: `Capabilities.share_hotplug`), and after the resume they are plugged in and mounted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths, share_nesting, store
from .domain import ShareDevice
from .errors import PymachineError

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
GuestScript = Callable[[str], "tuple[int, str, str] | None"]  # runs a script in the guest: (status, out, err)
# the save's quiesce: the script, or the guest agent unmounting these device shares where it can (none: the
# script), as (status, out, err); None when there is no host agent to do either
GuestQuiesce = Callable[[str, list[ShareDevice]], "tuple[int, str, str] | None"]
# the guest agent mounts these device shares: {path: None or why not}; None when it cannot (the script then)
GuestRemount = Callable[[list[ShareDevice]], "dict[str, str | None] | None"]
FORMAT = 1
STATE_FILE = "saved.vmstate"
META_FILE = "saved.json"
TEMP_SUFFIX = ".part"


@dataclass(frozen=True)
class Files:
    state: Path
    meta: Path

    @property
    def temp(self) -> Path:
        return self.state.with_name(self.state.name + TEMP_SUFFIX)


def files(name: str) -> Files:
    d = paths.machine(name).dir
    return Files(d / STATE_FILE, d / META_FILE)


class NotSaved(PymachineError):
    """The machine cannot be saved now; `message` is the one-line reason (the caller shuts it down)."""


# -- what a state is valid for -------------------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """The machine config as the VM saw it: any change (CPUs, memory, disk, shares, transport, driver,
    image) makes a saved state unusable."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def agent_version() -> str:
    try:
        from .hostagent.provision import local_checksum
    except ImportError:
        return ""
    return local_checksum() or ""


def fingerprint(config: dict[str, Any], accel: str) -> dict[str, Any]:
    image = config.get("image") or {}
    return {
        "format": FORMAT,
        "image": str(image.get("recipe_hash", "")),
        "agent": agent_version(),
        "config": config_hash(config),
        "accelerator": accel,
    }


WHY = {
    "format": "the saved-state format changed",
    "image": "the guest image changed",
    "agent": "the guest agent changed",
    "config": "the machine's config changed (CPUs, memory, disk, shares or driver)",
    "accelerator": "the accelerator changed",
    # QEMU restores a state only into the same devices: a VM saved before it had one must boot once to gain it
    "engine_port": "the saved VM has no engine port (virtio-serial), which QEMU cannot add to a saved state",
}


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def check(
    name: str, config: dict[str, Any], accel: str, verify_data: bool = True, engine_port: bool = False
) -> tuple[dict | None, str]:
    """(meta, "") when the saved state can be resumed; (None, reason) when there is one but it cannot;
    (None, "") when there is none. `engine_port`: this start would give the VM the engine socket's port."""
    f = files(name)
    if not f.state.exists() and not f.meta.exists():
        return None, ""
    try:
        meta = store.read_json(f.meta)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not f.state.exists():
        return None, "the saved state is incomplete"
    want = fingerprint(config, accel)
    for key, value in want.items():
        if meta.get(key) != value:
            return None, WHY[key]
    if engine_port and not meta.get("engine_port"):
        return None, WHY["engine_port"]
    try:
        size = f.state.stat().st_size
    except OSError:
        return None, "the saved state is unreadable"
    if size != meta.get("size"):
        return None, f"the saved state is damaged (size {size}, expected {meta.get('size')})"
    if verify_data and crc32_file(f.state) != meta.get("crc32"):
        return None, "the saved state is damaged (checksum mismatch)"
    return meta, ""


def port_free(host: str, port: int) -> bool:
    """Whether QEMU can listen on the SSH port the state was saved with (it is inside the state). With
    SO_REUSEADDR as QEMU binds: the old VM's closed connections linger in TIME_WAIT on that port."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return port > 0


def discard(name: str) -> None:
    f = files(name)
    for p in (f.meta, f.state, f.temp):  # meta first: a state file without it is never trusted
        p.unlink(missing_ok=True)


def describe(name: str) -> dict[str, Any] | None:
    """For `inspect`: the saved state's file, size and time, or None."""
    f = files(name)
    meta = store.read_json(f.meta) if f.meta.exists() else None
    if not isinstance(meta, dict):
        return {"file": str(f.temp), "complete": False} if f.temp.exists() else None
    return {
        "file": str(f.state),
        "size": meta.get("size"),
        "saved_at": meta.get("saved_at"),
        "save_seconds": meta.get("save_seconds"),
        "save_stages": meta.get("stages"),
        "image": meta.get("image"),
        "shares_replugged": [d.get("path") for d in meta.get("shares") or []],
        "complete": f.state.exists(),
    }


# -- the guest side of a save: flush, and let go of share devices --------------------------------------------
def quiesce_script(devs: list[ShareDevice], inner: Sequence[str] = ()) -> str:
    """Run in the guest before a save: flush the page cache, then unmount the device-backed shares — unless
    a process in another mount namespace (a container's bind mount) or an open file holds one; then remount
    what was unmounted and exit 3 with the reason. `inner` are the sync shares inside live shares, deepest
    first (share_nesting.nested_syncs): their copies' binds come off before the shares that hold them."""
    mounted = [d for d in devs if d.on_device]
    if not mounted and not inner:
        return "sync"
    lines = [
        MOUNT_FUNCTIONS,
        "sync",
        # every process in a mount namespace other than init's (`-ef`: the same nsfs inode), read by the shell
        # itself: an exec per process, or the readlink|ls|grep|sed it replaces, costs ~0.1 s each under TCG
        "for d in /proc/[0-9]*; do",
        '  [ "$d/ns/mnt" -ef /proc/1/ns/mnt ] || [ ! -e "$d/ns/mnt" ] && continue',
        "  while read -r l; do case $l in",
        "    *' - virtiofs '*|*' - 9p '*)",
        '      echo "a container (pid ${d#/proc/}) uses a shared folder"; exit 3;;',
        '  esac; done 2>/dev/null <"$d/mountinfo"',
        "done",
    ]
    for i, p in enumerate(inner):  # the sync copies' binds first: an outer share under them is busy
        undo = "; ".join(rebind_command(q) for q in reversed(inner[:i]))
        lines += [  # (a loop: a bind made twice, by a race, comes off whole)
            f"while {sync_bound(p)}; do umount {shlex.quote(p)} 2>/run/.pm-umount && continue",
            f"  {undo or ':'}",
            f'  echo "{p} is busy in the VM: $(cat /run/.pm-umount)"; exit 3',
            "done",
        ]
    for i, d in enumerate(mounted):
        path = shlex.quote(d.path)
        undo = "; ".join(
            [f"{is_mounted(e)} || {remount_command(e)}" for e in mounted[:i]]
            + [rebind_command(q) for q in reversed(inner)]
        )
        lines += [
            f"if {is_mounted(d)} && ! umount {path} 2>/run/.pm-umount; then",
            f"  {undo or ':'}",
            f'  echo "{d.path} is busy in the VM: $(cat /run/.pm-umount)"; exit 3',
            "fi",
        ]
    return "\n".join(lines)


def sync_store(path: str) -> str:
    """Where the guest keeps the copy of sync share `path` (hostagent/syncshare.py)."""
    from .hostagent.syncshare import GUEST_STORE, share_id

    return f"{GUEST_STORE}/{share_id(path)}"


def sync_bound(path: str) -> str:
    """A shell test: the sync share's copy is bound at `path` (the same inode as its store)."""
    store_dir = shlex.quote(sync_store(path))
    return f'[ "$(stat -c %d:%i {store_dir} 2>/dev/null)" = "$(stat -c %d:%i {shlex.quote(path)})" ]'


def rebind_command(path: str) -> str:
    """Bind the sync share's copy at `path` again unless it is there already (as the guest's sync side
    does, pymachine_agent/syncshare.py)."""
    q, store_dir = shlex.quote(path), shlex.quote(sync_store(path))
    bind = f"mount --bind {store_dir} {q} && mount -o remount,bind,nosuid,nodev {q}"
    return f"{{ {sync_bound(path)} || {{ {bind}; }}; }}"


# The share scripts' mount checks in shell builtins: `findmnt` and `mountpoint` are execs, ~0.1-0.15 s each
# in a TCG guest, and a resume's remount ran five of them plus a `seq` (0.68-0.88 s in the guest; 0.23-0.29 s
# with these). `pm_listed MANGLED TYPE` reads /proc/self/mounts, which shows the kernel's resolved path with
# its escapes (mounts_field); `pm_mounted MANGLED PATH TYPE` lets `findmnt` decide where that finds nothing (a
# symlink on the way). `pm_readahead MANGLED KB` sets the readahead of the filesystem mounted there (its bdi
# is major:minor).
MOUNT_FUNCTIONS = (
    'pm_listed() { while read -r _s m t _r; do [ "$m" = "$1" ] && [ "$t" = "$2" ] && return 0; '
    "done </proc/self/mounts; return 1; }\n"
    'pm_mounted() { pm_listed "$1" "$3" || findmnt -rn -t "$3" -M "$2" >/dev/null; }\n'
    'pm_readahead() { b=; while read -r _i _p dev _r m _x; do [ "$m" = "$1" ] && b=$dev; '
    'done </proc/self/mountinfo; [ -n "$b" ] && echo "$2" >"/sys/class/bdi/$b/read_ahead_kb"; }'
)


def mounts_field(path: str) -> str:
    """`path` as /proc/self/mounts and mountinfo show it (the kernel escapes space, tab, newline, \\)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def is_mounted(d: ShareDevice) -> str:
    """A shell test (needs MOUNT_FUNCTIONS): the share's own filesystem is mounted there (`mountpoint` would
    also pass for the guest's tmpfs under a /tmp share)."""
    return f"pm_mounted {shlex.quote(mounts_field(d.path))} {shlex.quote(d.path)} {d.transport}"


def remount_command(d: ShareDevice) -> str:
    """The mount the guest init made at boot (pminit.shares), for the same device."""
    opts = "nosuid,nodev" + (",ro" if d.readonly else "")
    if d.transport == "9p":
        opts += ",trans=virtio,version=9p2000.L,msize=524288,cache=mmap"
    return f"mount -t {d.transport} -o {opts} {d.tag} {shlex.quote(d.path)}"


def remount_script(devs: list[ShareDevice], wait_s: int = 20, inner: Sequence[str] = ()) -> str:
    """After a resume: mount the shares again, retrying while a re-plugged device is being probed (PCIe
    hot-plug takes seconds under TCG); exit 1 naming the shares that did not come back. `inner`: sync
    shares inside them, bound again afterwards (after a failed save; a resume leaves that to the guest's
    sync side, which the host agent starts on the new link and which waits for the outer share)."""
    out = [MOUNT_FUNCTIONS, "bad=''"]
    for d in devs:
        if not d.on_device:
            continue
        listed = f"pm_listed {shlex.quote(mounts_field(d.path))} {d.transport}"  # no exec: not mounted yet
        out.append(
            f"i=0; while [ $i -lt {wait_s * 10} ]; do {listed} && break; "
            f"{remount_command(d)} 2>/dev/null && break; sleep 0.1; i=$((i+1)); done; "
            f'{is_mounted(d)} || bad="$bad {d.path}"'
        )
        if d.transport == "virtiofs":  # pminit's 4 MiB readahead (sequential reads 0.36x -> 0.99x native)
            out.append(f"pm_readahead {shlex.quote(mounts_field(d.path))} 4096 2>/dev/null")
    out += [rebind_command(p) + f' || bad="$bad {p}"' for p in reversed(inner)]
    out.append('[ -z "$bad" ] || { echo "shares not mounted again:$bad"; exit 1; }')
    return "\n".join(out)


def clock_command(now: float | None = None) -> str:
    """Step the guest clock to the host's: a resumed guest's clock stands where it was saved."""
    return f"date -s @{(time.time() if now is None else now):.3f} >/dev/null"


def share_devices(entries: list[dict[str, Any]]) -> list[ShareDevice]:
    return [
        ShareDevice(**{k: e[k] for k in ("tag", "path", "readonly", "transport", "socket")}) for e in entries
    ]


def meta_for(config: dict[str, Any], accel: str, size: int, crc: int, **extra: Any) -> dict[str, Any]:
    return {**fingerprint(config, accel), "size": size, "crc32": crc, "saved_at": time.time(), **extra}


def commit(name: str, meta: dict[str, Any]) -> None:
    """The temp file is complete: rename it, then write its JSON (the JSON is what makes it a state)."""
    # No fsync of the state itself (seconds for a GiB): a host crash that loses part of it fails the CRC
    # check, and the machine boots cold from a disk the guest had flushed.
    f = files(name)
    os.replace(f.temp, f.state)
    store.write_json(f.meta, meta)


# -- save and resume, as `stop` and `start` call them --------------------------------------------------------
def same_shares(configured: Any, started: Any) -> bool:
    """config.json's shares against those state.json recorded at start: the same list of shares, whatever the
    form (config.json leaves out `"sync": false`, state.json has every field; an old state has no `sync`)."""
    from .config import Share

    def norm(entries: Any) -> list[Share]:
        return [Share.from_json(e) for e in entries or []]

    return norm(configured) == norm(started)


def save(
    name: str,
    drv: Any,
    config: dict[str, Any],
    started: dict[str, Any],
    say: Progress,
    quiesce: GuestQuiesce | None = None,
    qemu_account: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Save the running machine `name` to its state file and end its VM; returns the state's JSON.

    Raises NotSaved (nothing changed, the VM still runs, shares mounted again as far as possible: see
    give_back) when it cannot, with the save's own reason: the caller then shuts the machine down.
    `started` is state.json (the shares and transport of this boot). `quiesce` runs the guest's quiesce script
    over the host agent's open link (no SSH handshake of our own); when it answers None (no agent), the script
    runs over a connection of our own. `qemu_account`: who QEMU runs as (machines.qemu_account), asked only
    when a virtiofsd must start again."""
    if not drv.capabilities.save_state:
        raise NotSaved(f"the {drv.name} driver cannot save a VM's state")
    if not same_shares(config.get("shares"), started.get("shares")):
        raise NotSaved("the machine's shares changed since it started: they apply at a cold boot")
    from .machine_settings import pending

    changed = pending(config, started)  # saved with the new config's fingerprint, the resume would skip them
    if changed:
        said = ", ".join(str(c) for c in changed)
        raise NotSaved(f"the machine's settings changed since it started ({said}): they apply at a cold boot")
    transport = str(started.get("share_transport") or "")
    devs = [d for d in _share_devices(config, transport) if d.on_device]
    plugged = [d for d in devs if d.transport == "virtiofs"]
    if plugged and not drv.capabilities.share_hotplug:
        raise NotSaved(
            f"saved state not possible with virtiofs shares on the {drv.name} driver (it cannot unplug them)"
        )
    inner = [p for p, _outer in share_nesting.nested_syncs(_cfg(config).shares)]
    t0 = time.monotonic()
    f = files(name)
    discard(name)
    script = quiesce_script(devs, inner)
    # the guest agent can unmount the device shares, not the sync copies' binds inside them: those need it
    done = quiesce(script, [] if inner else devs) if quiesce is not None else None
    status, out, err = done if done is not None else _run_in_guest(name, script, "flush its disk")
    if status != 0:
        said = (out or err).strip().splitlines()
        raise NotSaved(f"saved state not possible: {said[-1] if said else f'exit status {status}'}")
    quiesced = time.monotonic()
    detached: list[ShareDevice] = []
    try:
        for d in plugged:
            drv.detach_share(name, d)
            detached.append(d)
        crc = drv.save(name, f.temp)
    except (PymachineError, OSError) as exc:  # OSError: QMP's socket closed (QEMU died mid-save)
        f.temp.unlink(missing_ok=True)
        failed = NotSaved(f"saving failed: {getattr(exc, 'message', exc)}")
        give_back(name, drv, detached, devs, inner, qemu_account)
        raise failed from exc
    saved = time.monotonic()
    size = f.temp.stat().st_size
    crc = crc if isinstance(crc, int) else crc32_file(f.temp)  # the driver saw the bytes go by, or not
    meta = meta_for(
        config,
        str(started.get("accelerator", "tcg")),
        size,
        crc,
        ssh_port=started.get("ssh_port"),
        engine_port=bool(started.get("engine_port")),
        share_transport=transport,
        shares=[{**d.guest(), "socket": d.socket} for d in devs],
        started_shares=started.get("shares"),
        save_seconds=round(time.monotonic() - t0, 2),
        # where a stop's time goes (bench/start.py): the guest's flush, the driver's save, the checksum
        stages={
            "quiesce": round(quiesced - t0, 2),
            "save": round(saved - quiesced, 2),
            "checksum": round(time.monotonic() - saved, 2),
        },
    )
    commit(name, meta)
    say(f"saved machine state ({size / 2**20:.0f} MiB) in {meta['save_seconds']:.1f} s")
    return meta


def give_back(
    name: str,
    drv: Any,
    detached: list[ShareDevice],
    devs: list[ShareDevice],
    inner: Sequence[str],
    qemu_account: Callable[[], Any] | None,
) -> None:
    """After a failed save, best effort: the VM runs on (unpaused), with its folders plugged in and mounted
    again. The unplug ended the devices' virtiofsd (it exits when QEMU hangs up), so they start anew first.
    Nothing here may raise: the save's own error is the one to report, and the caller shuts the VM down
    anyway; what did not come back is logged."""
    from . import shares
    from .drivers import DriverState

    try:
        if drv.state(name) is not DriverState.RUNNING:
            return
        if drv.paused(name):  # a save that failed half-way may leave the vCPUs stopped
            drv.unpause(name)
        if detached:
            shares.start_daemons(name, detached, qemu_account() if qemu_account else None, others=True)
        for d in detached:
            drv.attach_share(name, d)
        if devs or inner:
            script = remount_script(devs, inner=inner)
            status, out, err = _run_in_guest(name, script, "mount its shares again")
            if status != 0:
                log.warning("after the failed save of %s: %s", name, (out or err).strip())
    except Exception as exc:  # noqa: BLE001 - (an SSH timeout is neither of ours nor an OSError)
        log.warning("after the failed save of %s, its shares did not come back: %s", name, exc)


def _share_devices(config: dict[str, Any], transport: str) -> list[ShareDevice]:
    from . import shares

    return shares.devices(_cfg(config), transport)


def _run_in_guest(name: str, script: str, what: str) -> tuple[int, str, str]:
    """Run `script` over an SSH connection of our own; NotSaved when the guest cannot be reached."""
    from . import ssh

    try:
        client = ssh.connect(name, timeout=20)
    except PymachineError as exc:
        raise NotSaved(f"cannot reach the guest to {what}: {exc.message}") from exc
    try:
        status, out, err = ssh.exec_command(client, script, timeout=60)
    finally:
        client.close()
    return status, out.decode(errors="replace"), err.decode(errors="replace")


def _cfg(config: dict[str, Any]) -> Any:
    from .config import MachineConfig

    return MachineConfig.from_json(config)


class Damaged(PymachineError):
    """The saved state's bytes are not the ones saved (its CRC differs)."""


class Checksum:
    """The state file's CRC, computed on a thread of its own while QEMU loads the same file (the page cache
    serves both): ~0.2-0.5 s off the resume's critical path. The fd is opened at once, so the restore may
    delete the file meanwhile."""

    def __init__(self, path: Path) -> None:
        import threading

        self._fh = open(path, "rb")  # noqa: SIM115 - closed by the thread
        self.value: int | None = None
        self._thread = threading.Thread(target=self._run, name="state-crc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        crc = 0
        with self._fh as fh:
            while chunk := fh.read(1 << 22):
                crc = zlib.crc32(chunk, crc)
        self.value = crc

    def check(self, expected: object) -> None:
        self._thread.join()
        if self.value != expected:
            raise Damaged("the saved state is damaged (checksum mismatch)")


def restore(name: str, drv: Any, spec: Any, meta: dict[str, Any], qemu_account: Any) -> None:
    """Start the VM from the saved state (used once: deleted whether this works or not, since the guest's
    disk moves on from here) and plug its virtiofs devices back in. PymachineError if the state won't load;
    Damaged (the VM never ran) when its checksum is not the saved one. The checksum is computed while QEMU
    loads: the VM is restored paused and only runs once the bytes it loaded are known good."""
    from . import shares

    f = files(name)
    devs = share_devices(meta.get("shares") or [])
    shares.start_daemons(name, devs, qemu_account)
    try:
        crc = Checksum(f.state)
        try:
            drv.restore(spec, f.state, paused=True)
        except Exception:  # (libvirt-python once failed a damaged load with a SystemError, not libvirtError)
            crc.check(meta.get("crc32"))  # a damaged stream can fail the load itself: say so, not "failed"
            raise
        try:
            crc.check(meta.get("crc32"))
        except Damaged:
            drv.force_stop(name)
            raise
        drv.unpause(name)
    except BaseException:
        shares.stop_daemons(name)
        raise
    finally:
        discard(name)
    for d in devs:
        if d.transport == "virtiofs":
            drv.attach_share(name, d)


class AfterResume:
    """In the resumed guest, on a thread of its own: mount the shares again, and step the clock to the
    host's at once where no host agent does (`run` is None). `run` (the host agent's link) runs the remount
    when it can, else an SSH connection of ours does. `wait` returns the problems to show as warnings."""

    def __init__(
        self,
        name: str,
        meta: dict[str, Any],
        run: GuestScript | None = None,
        remount: GuestRemount | None = None,
    ) -> None:
        import threading

        self.name, self.meta, self.run, self.remount = name, meta, run, remount
        self.clock = run is None  # the host agent steps the clock at its link-up itself
        self.problems: list[str] = []
        self.thread = threading.Thread(target=self._run, name="after-resume", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        devs = share_devices(self.meta.get("shares") or [])
        mounted = [d for d in devs if d.on_device]
        if mounted and self.remount is not None:
            # the guest agent mounts them (no exec in the restored guest); None: it cannot, the script does
            answer = self.remount(mounted)
            if answer is not None:
                failed = [f"{path}: {error}" for path, error in answer.items() if error is not None]
                missing = [d.path for d in mounted if d.path not in answer]
                if failed or missing:
                    said = "; ".join(failed + [f"{p}: not mounted" for p in missing])
                    self.problems.append(f"after the resume, the guest did not mount its shares: {said}")
                return
        script = remount_script(devs)
        done = self.run(script) if self.run is not None else None
        if done is None:
            done = self._run_over_ssh(script)
        if done is None:
            return
        status, out, err = done
        if status != 0:
            said = (err or out).strip()
            self.problems.append(
                f"after the resume, the guest did not set its clock or mount its shares: {said}"
            )

    def _run_over_ssh(self, remount: str) -> tuple[int, str, str] | None:
        from . import ssh

        deadline = time.monotonic() + 60
        while True:
            try:
                client = ssh.connect(self.name, timeout=20)
                break
            except PymachineError as exc:
                if time.monotonic() > deadline:
                    self.problems.append(f"after the resume, the guest does not answer on SSH: {exc.message}")
                    return None
                time.sleep(0.1)
        # the time is taken once connected (a connection takes seconds under load: the clock would lag)
        script = (clock_command() + "\n" if self.clock else "") + remount
        try:
            status, out, err = ssh.exec_command(client, script, timeout=60)
        finally:
            client.close()
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def wait(self, deadline: float) -> list[str]:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            return ["after the resume, the guest has not set its clock and mounted its shares yet"]
        return self.problems
