"""Build the guest image from `images/guest/` in two cached stages.

Stage 1 (slow, ~1 min): mmdebstrap a bookworm minbase root filesystem into a tarball keyed by
`image.rootfs_hash()` (only `images/guest/base/` feeds it). Stage 2 (seconds): unpack it, take the kernel out,
build the initrd, add the overlay files and the guest agent, `mke2fs -d` an ext4 image and convert it to
qcow2. Everything is built in a temporary folder inside the cache and renamed into place, so a crash never
leaves a half-built image behind. The caller holds `image.build_lock()`.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pymachine.images import GUEST_RECIPE
from pymachine_agent import protocol

from . import paths, proc
from .errors import PymachineError
from .image import MANIFEST, ImageManifest, Progress, agent_checksum, rootfs_hash
from .image_initrd import build_initrd
from .progress import StepNote

# Boot-time options (docs/images.md "Boot timeline"): tsc=reliable keeps the TSC as clocksource (TCG's vCPUs
# fail the kernel's TSC sync check, and the HPET fallback is an emulated MMIO read per clock read);
# no_timer_check, cryptomgr.notests, i8042.noaux/nokbd and 8250.nr_uarts=1 skip probes and self-tests that
# cost tenths of a second each under TCG; rcu_expedited shortens the RCU waits of module loads and networking.
CMDLINE = (
    "console=ttyS0 root=/dev/vda rw init=/sbin/pymachine-init panic=-1 quiet tsc=reliable no_timer_check"
    " rcupdate.rcu_expedited=1 cryptomgr.notests i8042.noaux i8042.nokbd 8250.nr_uarts=1"
)
MIN_VIRTUAL_BYTES = 2 << 30
GiB_ALIGN = 256 << 20
BUILD_TOOLS = ("mmdebstrap", "mke2fs", "qemu-img", "tar")


def _lines(path: Path) -> list[str]:
    return [s for s in (ln.strip() for ln in path.read_text().splitlines()) if s and not s.startswith("#")]


def _log_path() -> Path:
    return paths.image_cache_dir() / "build.log"


def _check_host() -> None:
    for tool in BUILD_TOOLS:
        proc.require(tool)
    if os.geteuid() != 0:
        raise PymachineError(
            "building the guest image needs root (mmdebstrap --mode=root, file ownership in the disk)",
            hint="run 'sudo pymachine image build' once; the result is cached",
        )


def _clean_stale(cache: Path) -> None:
    """Remove leftovers of builds that died (we hold the build lock, so none is running)."""
    for stale in cache.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def rootfs_tarball(recipe: Path, say: Progress, force: bool = False, variant: Path | None = None) -> Path:
    """Stage 1: the mmdebstrap tarball, cached by the hash of `images/guest/base/` (plus a variant's
    packages: `rootfs-cluster-<hash>.tar`, kept beside the default one)."""
    cache = paths.image_cache_dir()
    prefix = f"rootfs-{variant.name}-" if variant is not None else "rootfs-"
    target = cache / f"{prefix}{rootfs_hash(recipe, variant)}.tar"
    extra = _lines(variant / "packages.txt") if variant is not None else []
    if target.exists() and not force:
        say(f"rootfs: cached ({target.name})")
        return target
    base = recipe / "base"
    say("rootfs: mmdebstrap bookworm minbase (about a minute)")
    tmp = cache / f".build-rootfs-{os.getpid()}.tar"
    argv: list[str | Path] = [
        "mmdebstrap",
        "--verbose",  # apt and dpkg lines: the package being fetched, unpacked, set up (mmdebstrap_note)
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        "--include=" + ",".join(_lines(base / "packages.txt") + extra),
        # The archive snapshot may be older than the clock says (also what the host's apt is told).
        '--aptopt=Acquire::Check-Valid-Until "false"',
        '--aptopt=Acquire::Check-Date "false"',
        *[f"--dpkgopt=path-exclude={pattern}" for pattern in _lines(base / "dpkg-excludes.txt")],
        "--customize-hook=sh " + shlex.quote(str(base / "customize.sh")) + ' "$1"',
        "bookworm",
        tmp,
        *_lines(base / "sources.list"),
    ]
    try:
        # stdin must not be inherited: mmdebstrap reads sources from a non-tty stdin.
        proc.run(argv, timeout=900, input=b"", log_path=_log_path(), on_line=_notes(say))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    same_kind = re.compile(re.escape(prefix) + r"[0-9a-f]{64}(\.tar|\.d)$")  # a variant's are not ours
    for old in cache.glob(f"{prefix}*"):
        if same_kind.match(old.name) and old.name not in (target.name, _tree_of(target).name):
            # One rootfs is enough; old ones are ~300 MB each.
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    return target


_DPKG = re.compile(r"^(Unpacking|Setting up|Get:\d+ \S+ \S+ \S+) (\S+?)(?::\S+)? ")
_VERB = {"Unpacking": "unpacking", "Setting up": "setting up"}


def mmdebstrap_note(line: str) -> StepNote | None:
    """What mmdebstrap is doing, from one of its lines: its own `I:` steps and apt's/dpkg's per package
    (`Get:12 http://… bookworm/main amd64 libc6 …`, `Unpacking libc6:amd64 (2.36-9) ...`, `Setting up …`)."""
    if line.startswith("I: "):
        return StepNote("rootfs", line[3:].strip())
    m = _DPKG.match(line)
    if m:
        return StepNote("rootfs", f"{_VERB.get(m.group(1), 'downloading')} {m.group(2)}")
    return None


def _notes(say: Progress) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        note = mmdebstrap_note(line)
        if note is not None:
            say(note)  # type: ignore[arg-type]

    return on_line


def _tree_of(tarball: Path) -> Path:
    return tarball.with_suffix(".d")


def rootfs_tree(tarball: Path, say: Progress) -> Path:
    """The tarball unpacked once, next to it. Each disk build hard-link-copies it (`cp -al`, ~1 s instead
    of unpacking 300 MB again); the build only ever unlinks and creates files in its copy, never writes
    into a shared inode, so the tree stays pristine."""
    tree = _tree_of(tarball)
    if tree.is_dir():
        return tree
    say("rootfs: unpacking the tarball (once per rootfs)")
    tmp = tarball.parent / f".build-tree-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        proc.run(["tar", "-xpf", tarball, "-C", tmp, "--numeric-owner"], timeout=600, log_path=_log_path())
        os.replace(tmp, tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def _install_overlay(overlay: Path, root: Path) -> None:
    for src in sorted(overlay.rglob("*")):
        dest = root / src.relative_to(overlay)
        if src.is_dir():
            dest.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755 if src.stat().st_mode & 0o111 else 0o644)
        os.chown(dest, 0, 0)


def _install_agent(root: Path) -> str:
    """Copy the guest agent's sources to /opt/pymachine/agent/pymachine_agent; returns their checksum."""
    package_root = Path(protocol.__file__).resolve().parent
    dest_root = root / "opt/pymachine/agent/pymachine_agent"
    shutil.rmtree(dest_root, ignore_errors=True)
    for src in protocol.source_files(package_root):
        dest = dest_root / src.relative_to(package_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return agent_checksum(package_root)


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _make_disk(root: Path, work: Path, hash_: str) -> tuple[Path, int]:
    used = _tree_bytes(root)
    virtual = max(MIN_VIRTUAL_BYTES, -(-int(used * 1.6) // GiB_ALIGN) * GiB_ALIGN)
    raw = work / "disk.raw"
    with open(raw, "wb") as fh:
        fh.truncate(virtual)
    fs_uuid = str(uuid.UUID(hash_[:32]))  # stable per recipe: same input, same filesystem identity
    proc.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "pymachine", "-U", fs_uuid, "-m", "0",
         "-E", f"root_owner=0:0,hash_seed={fs_uuid},lazy_itable_init=0,lazy_journal_init=0", "-d", root, raw],
        timeout=600,
        log_path=_log_path(),
    )  # fmt: skip
    disk = work / "disk.qcow2"
    convert = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk]
    proc.run(convert, timeout=600, log_path=_log_path())
    raw.unlink()
    return disk, virtual


def build(
    hash_: str, say: Progress, force: bool = False, recipe: Path = GUEST_RECIPE, variant: Path | None = None
) -> ImageManifest:
    """Build the image for `hash_` into its cache folder and return its manifest (`variant`: its packages in
    the rootfs and its overlay over the recipe's)."""
    _check_host()
    started = time.monotonic()
    cache = paths.image_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    _clean_stale(cache)
    tarball = rootfs_tarball(recipe, say, force=force, variant=variant)
    if force:
        shutil.rmtree(_tree_of(tarball), ignore_errors=True)
    tree = rootfs_tree(tarball, say)

    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        root = work / "root"
        out = work / "out"
        out.mkdir()
        say("disk: hard-link copy of the root filesystem")
        proc.run(["cp", "-al", tree, root], timeout=600, log_path=_log_path())
        versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir())
        if len(versions) != 1:
            raise PymachineError(f"expected one kernel in the guest root filesystem, found {versions}")
        kver = versions[0]
        say(f"initrd: busybox + virtio modules of {kver}")
        shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", out / "vmlinuz")
        build_initrd(root, kver, recipe / "initrd", out / "initrd.img")
        for item in (root / "boot").iterdir():  # the kernel boots from outside the disk
            item.unlink()
        _install_overlay(recipe / "overlay", root)
        if variant is not None and (variant / "overlay").is_dir():
            _install_overlay(variant / "overlay", root)
        checksum = _install_agent(root)
        # Byte-compile here: compiling on first import under TCG costs seconds of guest CPU at every boot.
        # checked-hash keeps the .pyc honest when the host agent later re-provisions newer sources.
        compile_argv = [
            "chroot",
            root,
            "/usr/bin/python3",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "checked-hash",
            "/opt/pymachine/agent",
            "/usr/lib/pymachine",  # the init (PID 1): compiled at every first boot otherwise
        ]
        proc.run(compile_argv, timeout=300, log_path=_log_path())
        # The code of the methods @dataclass writes, compiled once here instead of at every agent start
        # (pymachine_agent/codecache.py), by the guest's own Python.
        codecache_argv = ["chroot", root, "/usr/bin/env", "PYTHONPATH=/opt/pymachine/agent",
                          "/usr/bin/python3", "-S", "-m", "pymachine_agent.codecache"]  # fmt: skip
        proc.run(codecache_argv, timeout=300, log_path=_log_path())
        say("disk: mke2fs -d + qemu-img convert")
        stamp = f'{{"recipe_hash": "{hash_}", "agent_checksum": "{checksum}"}}\n'
        (root / "etc/pymachine-image.json").write_text(stamp)
        disk, virtual = _make_disk(root, work, hash_)
        shutil.rmtree(root)
        os.replace(disk, out / "disk.qcow2")
        manifest = ImageManifest(
            kernel=out / "vmlinuz",
            initrd=out / "initrd.img",
            disk=out / "disk.qcow2",
            recipe_hash=hash_,
            disk_bytes=(out / "disk.qcow2").stat().st_size,
            virtual_bytes=virtual,
            cmdline=CMDLINE,
            agent_checksum=checksum,
            kernel_version=kver,
            rootfs_hash=rootfs_hash(recipe, variant),
            built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 1),
        )
        manifest.save()
        final = cache / hash_
        if final.exists():  # --force: swap the old folder out before removing it
            old = cache / f".build-old-{hash_[:12]}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f} s")
    return ImageManifest.load(final)


__all__ = ["build", "rootfs_tarball", "CMDLINE", "MANIFEST"]
