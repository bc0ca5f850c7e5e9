"""`pymachine doctor`: what this host has and lacks for running machines, each finding with a hint."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from dataclasses import asdict, dataclass

from . import config, paths
from .errors import PymachineError

MIN_FREE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True  # a failed optional check is a warning (e.g. libvirt when the qemu driver works)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def run_checks() -> list[Check]:
    return [
        _binary("qemu-system-x86_64", "apt-get install qemu-system-x86"),
        _binary("qemu-img", "apt-get install qemu-utils"),
        _binary(
            "ssh", "apt-get install openssh-client (only 'pymachine ssh' without a command needs it)", False
        ),
        _libvirt(),
        _kvm_permissions(),
        _accelerator(),
        _image(),
        _disk_space(),
        _virtiofsd(),
        *_shares(),
    ]


def _virtiofsd() -> Check:
    from .shares import virtiofsd_binary

    found = virtiofsd_binary()
    return Check(
        "virtiofsd",
        bool(found),
        found or "not found: host folders fall back to the next transport (mount list shows which)",
        "" if found else "apt-get install qemu-system-x86 (it ships /usr/lib/qemu/virtiofsd)",
        required=False,
    )


def _shares() -> list[Check]:
    """Running machines whose host-folder daemons died (a crashed virtiofsd: the share is gone in the VM)."""
    from . import machines

    out = []
    try:
        found = machines.list_machines()
    except PymachineError:
        return []
    for m in found:
        if m.share_problems:
            out.append(
                Check(
                    f"shares of {m.name}",
                    False,
                    "; ".join(m.share_problems),
                    f"restart the machine: pymachine restart {m.name}",
                    required=False,
                )
            )
    return out


def _binary(command: str, hint: str, required: bool = True) -> Check:
    found = shutil.which(command)
    return Check(command, bool(found), found or "not found", "" if found else hint, required)


def _libvirt() -> Check:
    if importlib.util.find_spec("libvirt") is None:
        return Check(
            "libvirt", False, "libvirt-python is not installed", "pip install 'pymachine[libvirt]'; "
            "or use --driver qemu", required=False
        )  # fmt: skip
    from .drivers.libvirt import LibvirtDriver

    drv = LibvirtDriver()
    try:
        version = drv.conn().getLibVersion()
    except PymachineError as exc:
        return Check("libvirt", False, exc.message, exc.hint, required=config.default_driver() == "libvirt")
    major, minor = version // 1_000_000, version // 1000 % 1000
    return Check("libvirt", True, f"libvirtd {major}.{minor} at {drv.uri}")


def _kvm_permissions() -> Check:
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return Check("/dev/kvm", True, "absent (machines use TCG)", required=False)
    group_rw = bool(st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP) and st.st_gid != 0
    if group_rw:
        return Check("/dev/kvm", True, f"mode {stat.filemode(st.st_mode)}, group {st.st_gid}")
    return Check(
        "/dev/kvm",
        False,
        f"mode {stat.filemode(st.st_mode)}, root only: libvirt's QEMU user cannot open it, so libvirt "
        "re-probes QEMU for ~48 s on every start",
        "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (Debian's udev rule; packaging/services.sh libvirtd)",
        required=False,
    )


def _accelerator() -> Check:
    try:
        from .accel import probe
    except ImportError:
        return Check("accelerator", True, "tcg (no probe available)", required=False)
    accel = probe()
    if accel.name != "tcg":
        return Check("accelerator", True, f"{accel.name}: {accel.reason}")
    return Check(
        "accelerator",
        True,
        f"tcg: {accel.reason}; boots take seconds, not a second, and stage timeouts are longer",
        required=False,
    )


def _image() -> Check:
    try:
        from .image import inspect_image
    except ImportError as exc:
        return Check("image", False, f"image support missing: {exc}")
    manifest = inspect_image()
    if manifest is None:
        return Check(
            "image", True, "not built yet", "'pymachine create' builds it (about a minute)", required=False
        )
    return Check("image", True, f"{manifest.recipe_hash[:12]} at {manifest.folder}")


def _disk_space() -> Check:
    root = paths.home()
    probe = root if root.exists() else root.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    ok = free >= MIN_FREE_BYTES
    return Check(
        "disk space",
        ok,
        f"{free / 1024**3:.1f} GiB free at {probe}",
        "" if ok else "free some space, or set PYMACHINE_HOME to a roomier disk",
    )
