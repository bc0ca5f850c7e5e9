"""`pymachine create` refuses what it can refuse before it builds the guest image (minutes): a disk below the
image's size, a share transport the driver cannot do. The build tools are off PATH here, so a create that
started building would fail on them instead ("the command 'mmdebstrap' is missing") and never get far."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.image_cache import cached_image


def _create(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", "create", "robust-t", "--no-home-mount", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def env(pymachine_home: Path, tmp_path: Path) -> dict[str, str]:
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    cache = pymachine_home / "c"  # an empty cache of our own: its image is not built
    return {
        **os.environ,
        "PYMACHINE_HOME": str(pymachine_home),
        "PYMACHINE_CACHE": str(cache),
        "PATH": str(no_tools),
    }


def _refused(result: subprocess.CompletedProcess[str], why: str) -> None:
    assert result.returncode != 0, result
    assert why in result.stderr, result.stderr
    assert "mmdebstrap" not in result.stderr and "qemu-img" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_disk_below_every_image_is_refused_before_any_build(env: dict[str, str]) -> None:
    result = _create("--disk", "1", env=env)
    _refused(result, "invalid machine settings: disk: must be at least the image's size 2G")
    assert not (Path(env["PYMACHINE_CACHE"]) / "images").exists()  # no build began
    assert not (Path(env["PYMACHINE_HOME"]) / "m" / "robust-t").exists()


def test_a_disk_below_the_cached_image_is_refused_with_its_size(env: dict[str, str]) -> None:
    cached_image(Path(env["PYMACHINE_CACHE"]), virtual_bytes=3 << 30)
    _refused(_create("--disk", "2G", env=env), "disk: must be at least the image's size 3G")


def test_a_share_transport_the_driver_cannot_do_is_refused_before_any_build(env: dict[str, str]) -> None:
    # the guest kernel has no 9p (shares.GUEST_TRANSPORTS), whatever the driver
    result = _create("--driver", "qemu", "--share-transport", "9p", env=env)
    _refused(result, "cannot share folders over 9p here")
    assert not (Path(env["PYMACHINE_CACHE"]) / "images").exists()
