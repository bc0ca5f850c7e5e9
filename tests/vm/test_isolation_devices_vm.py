"""Issue 12, point 1 (devices), in a real machine (pure cgroup v2, the guest kernel's BPF device programs):
the attack from the issue, a default container reading the guest's disks through a node it made with mknod,
reads nothing; `--device /dev/fuse` and `--privileged` work. Driven by the docker CLI through the machine."""

from __future__ import annotations

import pytest
from support.hostagent_vm import VmMachine

B = "pymachine/busybox"
DENIED = ("Operation not permitted", "Permission denied")


@pytest.fixture
def vm(request: pytest.FixtureRequest) -> VmMachine:
    """The session's machine, busybox loaded (shared with the other host-agent vm tests)."""
    return request.getfixturevalue("hostagent_machine")


def test_the_seed_disks_ssh_host_key_cannot_be_read(vm: VmMachine) -> None:
    """The attack from the issue, verbatim: /dev/vdb is the seed disk (a tar holding the guest's host key)."""
    script = (
        'set -- $(tr : " " </sys/block/vdb/dev); mknod /s b $1 $2; tar -xOf /s ssh_host_ed25519_key | head -1'
    )
    proc = vm.docker("run", "--rm", B, "sh", "-c", script, check=False)
    assert "PRIVATE KEY" not in proc.stdout, "a default container read the guest's SSH host key"
    assert any(d in proc.stderr for d in DENIED), proc.stderr


def test_the_root_disk_cannot_be_read_or_written(vm: VmMachine) -> None:
    script = (
        'set -- $(tr : " " </sys/block/vda/dev); mknod /s b $1 $2 && echo made >&2;'
        " head -c 2048 /s | wc -c; exec 3>/s && echo writable"
    )
    proc = vm.docker("run", "--rm", B, "sh", "-c", script, check=False)
    assert "made" in proc.stderr  # mknod itself is allowed, as in Docker
    assert proc.stdout.split()[:1] == ["0"] and "writable" not in proc.stdout, proc.stdout
    assert any(d in proc.stderr for d in DENIED), proc.stderr


def test_default_devices_and_a_pty_work(vm: VmMachine) -> None:
    script = "head -c 4 /dev/urandom | wc -c; echo x >/dev/null && echo null; tty; echo via-tty >/dev/tty"
    proc = vm.docker("run", "--rm", "-t", B, "sh", "-c", script, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4", "null", "/dev/pts/0", "via-tty"]


def test_device_fuse_opens_and_its_permissions_hold(vm: VmMachine) -> None:
    opened = "test -c /dev/fuse && exec 3<>/dev/fuse && echo opened"
    proc = vm.docker("run", "--rm", "--device", "/dev/fuse", B, "sh", "-c", opened, check=False)
    assert proc.stdout.strip() == "opened", proc.stderr
    # read-only mapping: the node is there and opens for reading; the device program refuses the write
    proc = vm.docker("run", "--rm", "--device", "/dev/fuse:/dev/fuse:r", B, "sh", "-c", opened, check=False)
    assert "opened" not in proc.stdout and "Operation not permitted" in proc.stderr, proc.stderr


def test_privileged_sees_the_guests_disks(vm: VmMachine) -> None:
    proc = vm.docker(
        "run", "--rm", "--privileged", B, "sh", "-c", "head -c 2048 /dev/vda | wc -c", check=False
    )
    assert proc.stdout.strip() == "2048", proc.stderr
