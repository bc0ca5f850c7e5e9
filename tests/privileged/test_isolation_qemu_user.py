"""QEMU's user when pymachine runs as root: `pymachine-qemu`, allowed exactly the machine's files (POSIX ACL
entries), proven by opening files as that user. The argv and XML that make QEMU run as it: test_domain.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymachine.hostvm import qemu_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def opens_as(who: qemu_user.Account, path: Path, mode: str) -> bool:
    """Whether `who` can open `path` ("r" or "r+"), tried in a child that really runs as that user."""
    code = (
        "import os, sys\n"
        f"os.setgroups([]); os.setgid({who.gid}); os.setuid({who.uid})\n"
        "try:\n    open(sys.argv[1], sys.argv[2]).close()\nexcept OSError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path), mode]).returncode == 0


def test_the_qemu_user_opens_its_files_and_nothing_else(tmp_path: Path) -> None:
    who = qemu_user.account()
    assert who.uid != 0 and who.gid != 0
    home = tmp_path / "home"
    machine, cache = home / "m" / "dev", home / "cache"
    for folder in (machine, cache):
        folder.mkdir(parents=True)
    os.chmod(home, 0o700)
    files = {name: machine / name for name in ("disk.qcow2", "seed.tar", "id_ed25519", "config.json")}
    files.update(kernel=cache / "vmlinuz", base=cache / "base.qcow2", other=cache / "other")
    for path in files.values():
        path.write_text("x")
        os.chmod(path, 0o600)
    os.chmod(machine, 0o700)

    # the check can fail: before the grant the user opens nothing
    assert not opens_as(who, files["disk.qcow2"], "r")

    readable = [files["kernel"], files["base"], files["seed.tar"]]
    qemu_user.grant(who, readable=readable, writable=[files["disk.qcow2"]])
    qemu_user.grant(who, readable=readable, writable=[files["disk.qcow2"]])  # idempotent

    for path in readable:
        assert opens_as(who, path, "r") and not opens_as(who, path, "r+")
    assert opens_as(who, files["disk.qcow2"], "r+")
    for secret in ("id_ed25519", "config.json", "other"):
        assert not opens_as(who, files[secret], "r"), secret
    # folders above are searched (x), never listed
    drop = f"import os, sys\nos.setgroups([]); os.setgid({who.gid}); os.setuid({who.uid})\n"
    lister = drop + "os.listdir(sys.argv[1])"
    assert subprocess.run([sys.executable, "-c", lister, str(machine)], capture_output=True).returncode != 0
    # owners and mode bits of the user's files are left as they were
    assert all(p.stat().st_uid == 0 for p in files.values())
