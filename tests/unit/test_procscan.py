"""procscan.alive: a zombie is not alive (a daemonized QEMU that exited waits as one for its reaper, and the
direct-QEMU driver's save and stop waited that out)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pymachine.hostvm.drivers.procscan import alive

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")


def test_a_running_process_is_alive_and_its_zombie_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert alive(child.pid)
        assert child.stdin is not None
        child.stdin.close()  # it exits; nobody waits for it yet: a zombie
        deadline = time.monotonic() + 30
        while alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(child.pid)
        with open(f"/proc/{child.pid}/stat") as fh:
            assert ") Z " in fh.read()  # still there, unreaped: what kill(pid, 0) counted as alive
    finally:
        child.wait()
    assert not alive(child.pid)  # reaped: gone
