"""The host side of a running machine: QEMU is not root (libvirt and direct QEMU, pymachine run as root here),
and `pymachine ssh` keeps its exit status and opens no forward under a hostile ~/.ssh/config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, env_of, free_port, refused
from support.hostile_ssh import hostile_home, with_home
from support.machines import StartedMachine

from pymachine.hostvm import machines, ssh


def uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def qemu_pid(name: str) -> int:
    pid = machines.get(name).pid
    assert pid is not None, f"no QEMU process found for {name}"
    assert b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="the question is what QEMU runs as when pymachine is root")
def test_libvirt_qemu_is_not_root(machine: StartedMachine) -> None:
    assert 0 not in uids(qemu_pid(machine.name))


@pytest.mark.skipif(os.geteuid() != 0, reason="the question is what QEMU runs as when pymachine is root")
def test_direct_qemu_is_not_root(hostagent_machine: VmMachine) -> None:  # noqa: F811
    with env_of(hostagent_machine):
        assert 0 not in uids(qemu_pid(hostagent_machine.name))


def test_pymachine_ssh_ignores_a_hostile_ssh_config(machine: StartedMachine, tmp_path: Path) -> None:
    forward, socks = free_port(), free_port()
    layer = hostile_home(tmp_path, forward, socks)
    argv = [sys.executable, "-m", "pymachine.app.cli", "ssh", machine.name, "--", "true"]
    result = subprocess.run(
        with_home(layer, argv), env=machine.env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr  # not ProxyCommand false's 255
    assert refused(forward) and refused(socks)
    assert not (tmp_path / "local-command-ran").exists()
    # a forward lives as long as the session: while one is open (its command has started), none is there
    marker = f"/tmp/hostile-ssh-{os.getpid()}"
    stay = [sys.executable, "-m", "pymachine.app.cli", "ssh", machine.name, "--", f"touch {marker}; sleep 60"]
    with subprocess.Popen(with_home(layer, stay), env=machine.env(), stdout=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 120
            while ssh.run(machine.name, f"test -e {marker}")[0] != 0:
                assert proc.poll() is None and time.monotonic() < deadline, "the session did not start"
                time.sleep(0.5)
            assert refused(forward) and refused(socks)
        finally:
            proc.kill()
            ssh.run(machine.name, f"rm -f {marker}")
