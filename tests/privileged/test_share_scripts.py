"""The mount checks of the guest scripts a saving `stop` and a resume run (hostvm/savestate.py
MOUNT_FUNCTIONS), against this host's real kernel: /proc/self/mounts shows a path in the kernel's escaped form
(savestate.mounts_field), and a path with a symlink on the way is still found (through findmnt).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tmpfs import tmpfs_on

from pymachine.hostvm import savestate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    # a space, a tab and a backslash: each escaped in /proc/self/mounts
    with tmpfs_on(tmp_path / "a b\tc\\d", source="pmtest") as path:
        yield path


def check(test: str) -> int:
    """Exit status of `test` in bash (the guest's login shell) after the functions."""
    return subprocess.run(["bash", "-c", f"{savestate.MOUNT_FUNCTIONS}\n{test}"], check=False).returncode


def test_the_builtin_check_finds_a_mount_by_the_kernel_s_form_of_its_path(mounted: Path) -> None:
    field = savestate.mounts_field(str(mounted))
    assert check(f"pm_listed {shlex.quote(field)} tmpfs") == 0
    assert check(f"pm_listed {shlex.quote(field)} virtiofs") == 1  # another filesystem type there: not ours
    assert check(f"pm_listed {shlex.quote(str(mounted))} tmpfs") == 1  # the raw path is not the kernel's form
    assert check(f"pm_mounted {shlex.quote(field)} {shlex.quote(str(mounted))} tmpfs") == 0
    subprocess.run(["umount", str(mounted)], check=True)
    assert check(f"pm_mounted {shlex.quote(field)} {shlex.quote(str(mounted))} tmpfs") == 1


def test_a_path_through_a_symlink_is_decided_by_findmnt(mounted: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(mounted.parent)
    via = str(link / mounted.name)
    field = savestate.mounts_field(via)
    assert check(f"pm_listed {shlex.quote(field)} tmpfs") == 1  # /proc/self/mounts has the resolved path
    assert check(f"pm_mounted {shlex.quote(field)} {shlex.quote(via)} tmpfs") == 0
