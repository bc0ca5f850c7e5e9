"""A machine's disk is a qcow2 overlay on a cached image (issue 16): no `image prune` of any home that shares
the cache removes that base, and `image build --force` is refused while it is in use (real qemu-img)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pymachine.hostvm import image
from pymachine.hostvm.errors import PymachineError


def _qcow2(path: Path, backing: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*argv, str(path), "64M"], check=True)


def test_prune_keeps_a_base_that_a_machine_of_another_home_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYMACHINE_CACHE", str(cache))
    base = cache / "images" / ("4" * 64)
    _qcow2(base / "disk.qcow2")
    os.utime(base, (0, 0))  # built long ago
    other_home_disk = tmp_path / "home-a" / "m" / "box" / "disk.qcow2"
    _qcow2(other_home_disk, base / "disk.qcow2")
    image.register_user(base / "disk.qcow2", other_home_disk)  # what `create` in home A does

    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "home-b"))  # prune from another home
    assert image.prune_images(min_age_seconds=0) == []
    assert (base / "disk.qcow2").exists()

    other_home_disk.unlink()  # the machine of home A was deleted: the base is free
    assert image.prune_images(min_age_seconds=0) == [base]


def test_force_build_is_refused_while_a_machine_uses_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "home"))
    base = image.image_dir() / "disk.qcow2"
    _qcow2(base)
    overlay = tmp_path / "home" / "m" / "box" / "disk.qcow2"
    _qcow2(overlay, base)
    before = os.stat(base)
    with pytest.raises(PymachineError) as err:
        image.ensure_image(force=True)
    assert str(overlay) in str(err.value) and "delete those machines" in (err.value.hint or "")
    after = os.stat(base)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
