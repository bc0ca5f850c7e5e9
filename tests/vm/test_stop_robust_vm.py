"""`pymachine stop` ends the machine whatever the guest does, and says why, on one libvirt machine sharing a
folder over virtiofs (the tests run in order on it):

- A save that fails for real after the share's device was unplugged (savestate.save, give_back): the
  save's own error in one line, a shutdown instead (exit 0), nothing left running, the share plugged back
  first, and the next start boots cold with the share mounted. The failure is the one a person meets: the
  machine folder's filesystem is full. The home is a small tmpfs of its own; just before the stop a file
  fills it to a few MiB, the guest's RAM does not fit, and libvirt's save fails with ENOSPC after the unplug
  (the share's virtiofsd then exited with QEMU's connection).
- A guest that takes the poweroff and never goes (its poweroff stalls, over SSH and on the power button
  alike): `stop --shutdown` forces it off at its timeout, says so, exits 0 and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import SHARED_CACHE, VmMachine, env_of, wait_for
from support.machines import ensure_libvirtd, new_home, unique_name

HOME_SIZE = 1536 << 20  # the overlay disk, keys and logs, with room for what the guest writes
LEFT_FREE = 24 << 20  # room for the guest's own shutdown writes; far from the ~150 MiB of a saved state


@pytest.fixture(scope="module")
def full_vm() -> Iterator[VmMachine]:
    """A started libvirt machine whose home is a tmpfs of its own, sharing one folder over virtiofs."""
    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs as the machine's home")
    ensure_libvirtd()
    home = new_home()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={HOME_SIZE},mode=0700", "pm-full", home], check=True)
    share = home / "share"
    share.mkdir()
    env = dict(os.environ)
    env.update(PYMACHINE_HOME=str(home), PYMACHINE_CACHE=str(SHARED_CACHE), DOCKER_CONFIG=str(home / "dc"))
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        env.pop(key, None)
    machine = VmMachine(unique_name("rb"), home, env)
    machine.share = share  # type: ignore[attr-defined]
    try:
        with env_of(machine):
            from pymachine.hostvm import machines

            machines.create(
                machine.name,
                driver="libvirt",
                mounts=[str(share)],
                home_mount=False,
                share_transport="virtiofs",
            )
            machines.start(machine.name, lambda m: print(m, file=sys.stderr))
        yield machine
    finally:
        with env_of(machine), contextlib.suppress(Exception):
            from pymachine.hostvm import machines

            machines.delete(machine.name, force=True)
        subprocess.run(["umount", "-l", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def filled(folder: Path, leave: int) -> Iterator[None]:
    """The filesystem of `folder` full but for `leave` bytes, until the block ends."""
    st = os.statvfs(folder)
    size = st.f_bavail * st.f_frsize - leave
    assert size > 0, "the home is fuller than expected"
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        yield
    finally:
        os.close(fd)
        filler.unlink()


def qemu_runs(pid: int) -> bool:
    try:
        return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def daemons(vm: VmMachine) -> dict[str, int | None]:
    with env_of(vm):
        from pymachine.hostvm import shares

        return shares.daemon_status(vm.name)


def test_a_save_that_fails_after_the_unplug_shuts_down_with_its_own_reason(full_vm: VmMachine) -> None:
    vm = full_vm
    share = vm.share  # type: ignore[attr-defined]
    status, _, _ = vm.ssh(f"findmnt -rn -t virtiofs -M {share}")
    assert status == 0, "the share is not mounted over virtiofs"
    assert vm.ssh("sync")[0] == 0  # what the guest has to write later must fit in what is left
    folder = vm.home / "m" / vm.name

    with filled(vm.home, LEFT_FREE):
        stop = vm.pymachine("stop", vm.name, check=False)
    out = stop.stdout + stop.stderr
    assert stop.returncode == 0, out
    # the save's own error, in one line; not what plugging the share back in would have said
    lines = [line for line in out.splitlines() if "shutting down instead: saving failed" in line]
    assert len(lines) == 1 and "libvirt could not save" in lines[0], out
    assert "could not plug in" not in out and "after the failed save" not in out, out  # give_back worked
    assert f"machine '{vm.name}' is stopped" in stop.stdout, out
    assert not (folder / "saved.json").exists() and not (folder / "saved.vmstate.part").exists()

    # nothing of the machine runs on: not QEMU, not the share's daemon, not the host agent
    inspect = json.loads(vm.pymachine("inspect", vm.name).stdout)
    assert inspect["state"] == "stopped", inspect
    assert not any(daemons(vm).values()), daemons(vm)
    with env_of(vm):
        from pymachine.hostvm.hostagent import launcher

        assert launcher.agent_pid(vm.name) is None

    start = vm.pymachine("start", vm.name)
    assert "resuming" not in start.stdout + start.stderr, start
    status, _, _ = vm.ssh(f"findmnt -rn -t virtiofs -M {share}")
    assert status == 0, "the cold boot did not mount the share"


def test_a_guest_that_never_powers_off_is_forced_off_at_the_timeout(full_vm: VmMachine) -> None:
    vm = full_vm
    # the guest's poweroff now hangs in the foreground: over SSH it never exits, on the power button it never
    # powers off (the init runs the same file)
    stall = "printf '#!/bin/sh\\nexec sleep 100000\\n' >/run/stall && chmod +x /run/stall"
    status, _, err = vm.ssh(f"{stall} && mount --bind /run/stall /sbin/pymachine-poweroff")
    assert status == 0, err
    with env_of(vm):
        from pymachine.hostvm import machines

        qemu = machines.get(vm.name).pid
    assert qemu

    stop = vm.pymachine("stop", "--shutdown", "--timeout", "15", vm.name, check=False, timeout=240)
    out = stop.stdout + stop.stderr
    assert stop.returncode == 0, out
    assert f"machine '{vm.name}' did not power off within 15 s: forcing it off" in out, out
    assert f"machine '{vm.name}' is stopped" in stop.stdout, out
    inspect = json.loads(vm.pymachine("inspect", vm.name).stdout)
    assert inspect["state"] == "stopped", inspect
    wait_for(lambda: not qemu_runs(qemu), "QEMU to be gone", timeout=30)
    assert not any(daemons(vm).values()), daemons(vm)
    with env_of(vm):
        from pymachine.hostvm.hostagent import launcher

        assert launcher.agent_pid(vm.name) is None
