"""A guest image as a finished build leaves it in the cache (its manifest and stand-in files), for tests of
what the CLI does with a cached image without building one."""

from __future__ import annotations

from pathlib import Path

from pymachine.hostvm import image


def cached_image(cache: Path, virtual_bytes: int = 2 << 30) -> Path:
    """The current recipe's image folder under `cache` (a PYMACHINE_CACHE), with a manifest; returned."""
    folder = cache / "images" / image.recipe_hash()
    folder.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "disk.qcow2"):
        (folder / name).write_bytes(b"x")
    image.ImageManifest(
        kernel=folder / "vmlinuz", initrd=folder / "initrd.img", disk=folder / "disk.qcow2",
        recipe_hash=folder.name, disk_bytes=1, virtual_bytes=virtual_bytes, cmdline="console=ttyS0",
        agent_checksum="a",
    ).save()  # fmt: skip
    return folder
