"""The guest's tiny initrd: busybox-static, the virtio modules of the image's own kernel, and an init script.

Written as a gzip'd newc cpio directly (no `cpio` binary, no root needed, byte-for-byte reproducible: fixed
mtimes, sorted modules, uid/gid 0).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import PymachineError


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _read_deps(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {module name: (file, [dependency files])}."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[_module_name(path)] = (path, rest.split())
    return deps


def resolve_modules(modules_dir: Path, wanted: list[str]) -> list[str]:
    """Module files (relative to `modules_dir`) to insmod, dependencies first; built-in ones are skipped."""
    deps = _read_deps(modules_dir)
    builtin_file = modules_dir / "modules.builtin"
    builtin = {_module_name(p) for p in builtin_file.read_text().split()} if builtin_file.exists() else set()

    order: list[str] = []

    def visit(name: str) -> None:
        if name in builtin:
            return
        if name not in deps:
            raise PymachineError(
                f"the guest kernel has no module '{name}' (initrd/modules.txt)",
                hint="fix images/guest/initrd/modules.txt for this kernel",
            )
        path, requires = deps[name]
        for dep in requires:
            visit(_module_name(dep))
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def _cpio_newc(entries: list[_Entry]) -> bytes:
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(name)
        pad()
        out.extend(entry.data)
        pad()
    return bytes(out)


def build_initrd(rootfs: Path, kernel_version: str, recipe: Path, out: Path) -> list[str]:
    """Write the initrd to `out`; returns the module files it loads (in load order)."""
    modules_dir = rootfs / "usr/lib/modules" / kernel_version
    wanted = [
        line.strip()
        for line in (recipe / "modules.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    order = resolve_modules(modules_dir, wanted)
    busybox = rootfs / "usr/bin/busybox"
    if not busybox.exists():
        raise PymachineError(
            "busybox-static is missing from the guest root filesystem",
            hint="add busybox-static to images/guest/base/packages.txt",
        )
    # Flat /lib/modules/<kver>/ with a matching modules.dep: one `busybox modprobe -a` loads everything
    # (each busybox exec costs a fraction of a second under TCG); /modules.order drives an insmod fallback.
    base = f"lib/modules/{kernel_version}"
    dir_mode = stat.S_IFDIR | 0o755
    dirs = ("bin", "dev", "lib", "lib/modules", base, "newroot", "proc", "sys")
    entries = [_Entry(d, dir_mode) for d in dirs]
    entries.append(_Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(_Entry("init", stat.S_IFREG | 0o755, (recipe / "init").read_bytes()))
    entries.append(_Entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
    requires = {path: dep_files for path, dep_files in _read_deps(modules_dir).values()}
    flat = [rel.rsplit("/", 1)[-1] for rel in order]
    dep_lines = []
    for rel, name in zip(order, flat, strict=True):
        entries.append(_Entry(f"{base}/{name}", stat.S_IFREG | 0o644, (modules_dir / rel).read_bytes()))
        dep_lines.append(f"{name}: {' '.join(d.rsplit('/', 1)[-1] for d in requires[rel])}".rstrip() + "\n")
    entries.append(_Entry(f"{base}/modules.dep", stat.S_IFREG | 0o644, "".join(dep_lines).encode()))
    text = {
        "modules.wanted": " ".join(wanted) + "\n",
        "modules.order": "".join(f"/{base}/{n}\n" for n in flat),
    }
    for name, content in text.items():
        entries.append(_Entry(name, stat.S_IFREG | 0o644, content.encode()))
    out.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=9, mtime=0))
    return order
