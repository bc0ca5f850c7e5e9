"""`pymachine image ...`: errors a person can act on, JSON output, and no rebuild of a cached image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.image_cache import cached_image


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def env(pymachine_home: Path) -> dict[str, str]:
    # An empty cache of our own: nothing is built in it.
    return {**os.environ, "PYMACHINE_HOME": str(pymachine_home), "PYMACHINE_CACHE": str(pymachine_home / "c")}


def test_missing_build_tool_names_the_debian_package(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _cli("image", "build", env={**env, "PATH": str(empty)})
    assert result.returncode != 0
    assert "error: the command 'mmdebstrap' is missing" in result.stderr
    assert "apt-get install mmdebstrap" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_before_build_says_what_to_run(env: dict[str, str]) -> None:
    result = _cli("image", "inspect", "--format", "json", env=env)
    assert result.returncode != 0
    assert "has not been built" in result.stderr and "pymachine image build" in result.stderr
    assert result.stdout == ""


def test_inspect_json_and_cached_build(env: dict[str, str]) -> None:
    folder = cached_image(Path(env["PYMACHINE_CACHE"]))
    result = _cli("image", "inspect", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["disk"] == str(folder / "disk.qcow2") and data["recipe_hash"] == folder.name
    assert {"kernel", "initrd", "disk_bytes"} <= set(data)
    # A cached image is not rebuilt, even where the build tools are missing.
    result = _cli("image", "build", env={**env, "PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert folder.name[:12] in result.stdout


def test_unwritable_cache_is_a_one_line_error(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _cli("image", "build", env={**env, "PYMACHINE_CACHE": str(blocker / "cache")})
    assert result.returncode != 0
    assert "error: cannot write to the image cache" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr
