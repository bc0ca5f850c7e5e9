"""packaging/subreaper.py, which services.sh starts libvirtd with: a daemon's orphans (libvirt's QEMU, after
its double fork) are reparented to it, not to PID 1, and reaped the moment they exit; the caller gets the
daemon's start status; the subreaper leaves when nothing is left below it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SUBREAPER = Path(__file__).resolve().parents[2] / "packaging" / "subreaper.py"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0]


def test_a_daemons_orphan_is_reaped_by_the_subreaper_at_once(tmp_path: Path) -> None:
    pidfile, go = tmp_path / "orphan.pid", tmp_path / "go"
    # like `libvirtd -d` starting QEMU: the command forks a child into the background and exits at once
    wait = f"echo $$ > {pidfile}; while [ ! -e {go} ]; do sleep 0.05; done"
    daemon = f"(sh -c '{wait}' &); exit 0"
    started = subprocess.run([sys.executable, str(SUBREAPER), "sh", "-c", daemon], timeout=30, check=False)
    assert started.returncode == 0  # the daemon's own start status
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    orphan = int(pidfile.read_text())
    info = ppid_and_state(orphan)
    assert info is not None
    reaper = info[0]
    assert reaper != 1 and "subreaper.py" in Path(f"/proc/{reaper}/cmdline").read_text()
    go.touch()  # the orphan exits: reaped at once, no zombie left waiting for PID 1
    deadline = time.monotonic() + 5
    while ppid_and_state(orphan) is not None:
        assert ppid_and_state(orphan) != (reaper, "Z") or time.monotonic() < deadline, "left a zombie"
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while ppid_and_state(reaper) not in (None, (1, "Z")):  # and the subreaper, with nothing left, is gone
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_command_that_fails_to_start_gives_its_status() -> None:
    failed = subprocess.run([sys.executable, str(SUBREAPER), "sh", "-c", "exit 3"], timeout=30, check=False)
    assert failed.returncode == 3
    missing = subprocess.run([sys.executable, str(SUBREAPER), "/nonexistent/daemon"], timeout=30, check=False)
    assert missing.returncode == 127
