"""Reverse-sshfs shares on a real machine: the host agent mounts a host folder in the guest over the SSH link
(hot-plugged through its control socket, the same code that mounts configured shares at connect), and
containers use it through the real docker CLI: both directions, ownership, rename/delete, 20 MiB with
checksums, a read-only share, escape attempts, and the mount coming back after the link is cut."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, env_of, wait_for

BUSYBOX = "pymachine/busybox"
OWNER = (4321, 4321)  # the share's owner on the host: not root, not anyone the guest knows


def call(vm: VmMachine, op: str, **args: object) -> dict:
    from pymachine.hostvm.hostagent import control

    return control.call(vm.home / "m" / vm.name / "ha.sock", op, timeout=120, **args)


def share_state(vm: VmMachine, path: Path) -> dict:
    return next(s for s in call(vm, "status")["shares"] if s["path"] == str(path))


@pytest.fixture(scope="module")
def vm(hostagent_machine: VmMachine) -> Iterator[VmMachine]:  # noqa: F811
    with env_of(hostagent_machine):
        yield hostagent_machine
    hostagent_machine.remove_all_containers()


def _share(vm: VmMachine, readonly: bool = False) -> Iterator[Path]:
    # Outside the system temp folder, which a machine may share by default over another transport.
    path = Path("/var/tmp") / f"pm-sshfs-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    os.chown(path, *OWNER)
    answer = call(vm, "share-mount", share=str(path), readonly=readonly)
    assert answer["ok"], answer
    try:
        yield path
    finally:
        call(vm, "share-unmount", share=str(path))
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def share(vm: VmMachine) -> Iterator[Path]:
    yield from _share(vm)


@pytest.fixture(scope="module")
def ro_share(vm: VmMachine) -> Iterator[Path]:
    yield from _share(vm, readonly=True)


@pytest.fixture(scope="module")
def secret() -> Iterator[Path]:
    """A 'home' outside every share, with a key in it."""
    home = Path("/var/tmp") / f"pm-sshfs-home-{uuid.uuid4().hex[:8]}"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("SECRET-KEY\n")
    yield home
    shutil.rmtree(home)


def sh(vm: VmMachine, share: Path, script: str, check: bool = True, ro: bool = False):  # type: ignore[no-untyped-def]
    mount = f"{share}:/data" + (":ro" if ro else "")
    return vm.docker("run", "--rm", "-v", mount, BUSYBOX, "sh", "-c", script, check=check)


def test_host_write_container_read_and_back_with_the_owners_uid(vm: VmMachine, share: Path) -> None:
    (share / "from-host.txt").write_text("hello from the host\n")
    assert sh(vm, share, "cat /data/from-host.txt").stdout == "hello from the host\n"
    sh(vm, share, "echo from the container > /data/from-ctr.txt && mkdir /data/d && touch /data/d/f")
    assert (share / "from-ctr.txt").read_text() == "from the container\n"
    for made in (share / "from-ctr.txt", share / "d", share / "d" / "f"):
        st = made.stat()
        assert (st.st_uid, st.st_gid) == OWNER, made  # root in the container, the share's owner on the host
    # inside, files show the host's numeric ids (idmap=none)
    assert sh(vm, share, "stat -c %u:%g /data/from-ctr.txt /data/from-host.txt").stdout.split() == [
        "4321:4321",
        "0:0",
    ]
    assert state_of_mount(vm, share) == "fuse.sshfs"


def state_of_mount(vm: VmMachine, share: Path) -> str:
    code, out, _ = vm.ssh(f"findmnt -rn -M {share} -o FSTYPE,OPTIONS")
    assert code == 0
    fstype, options = out.decode().split()
    assert {"nosuid", "nodev"} <= set(options.split(","))
    return fstype


def test_rename_and_delete_both_ways(vm: VmMachine, share: Path) -> None:
    (share / "a").write_text("A")
    sh(vm, share, "mv /data/a /data/b && echo B > /data/c")
    assert not (share / "a").exists() and (share / "b").read_text() == "A"
    (share / "c").rename(share / "c2")
    (share / "b").unlink()
    out = sh(vm, share, "ls /data; cat /data/c2; rm /data/c2").stdout.split()
    assert "c2" in out and "b" not in out and "c" not in out and "B" in out
    assert not (share / "c2").exists()


def test_a_20_mib_round_trip_with_checksums(vm: VmMachine, share: Path) -> None:
    # The 100 MiB round trip over sshfs runs in test_shares_transports.py (the qemu-sshfs machine,
    # the same mount code): here 20 MiB, many SFTP reads and writes each way, for the hot-plugged mount.
    data = os.urandom(20 * 1024 * 1024)
    (share / "big").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    out = sh(vm, share, "sha256sum /data/big && cp /data/big /data/big2 && sha256sum /data/big2").stdout
    assert out.split()[0::2] == [want, want]
    assert hashlib.sha256((share / "big2").read_bytes()).hexdigest() == want
    (share / "big").unlink()
    (share / "big2").unlink()


def test_a_read_only_share_refuses_writes_from_containers_and_guest_root(
    vm: VmMachine, ro_share: Path
) -> None:
    (ro_share / "keep.txt").write_text("keep\n")
    assert sh(vm, ro_share, "cat /data/keep.txt").stdout == "keep\n"
    proc = sh(
        vm, ro_share, "echo x > /data/new; echo x >> /data/keep.txt; rm /data/keep.txt; ls /data", check=False
    )
    assert proc.stdout.split() == ["keep.txt"]
    # guest root, even after remounting the FUSE mount read-write, is refused by the host server
    code, _, err = vm.ssh(
        f"mount -o remount,rw {ro_share}; echo y > {ro_share}/new2; rm -f {ro_share}/keep.txt"
    )
    assert sorted(os.listdir(ro_share)) == ["keep.txt"] and (ro_share / "keep.txt").read_text() == "keep\n"


def test_escape_attempts_give_nothing_outside_the_share(vm: VmMachine, share: Path, secret: Path) -> None:
    (share / "to-root").symlink_to("/")
    (share / "to-home").symlink_to(secret)
    (share / "to-key").symlink_to(secret / ".ssh" / "id_rsa")
    (share / "up").symlink_to("../" + secret.name)
    (share / "file").write_text("f")
    script = (
        "cat /data/to-key /data/to-home/.ssh/id_rsa /data/up/.ssh/id_rsa 2>&1;"
        "cat /data/../..{key} /data/to-root{key} 2>&1;"
        "ln /data/file /data/hard 2>&1; ln -s {key} /data/planted && cat /data/planted 2>&1; "
        "echo x > /data/to-home/planted 2>&1; echo done"
    ).format(key=secret / ".ssh" / "id_rsa")
    out = sh(vm, share, script, check=False).stdout
    assert "SECRET" not in out and out.rstrip().endswith("done"), out
    assert not (share / "hard").exists()  # no hard links through the share
    assert sorted(os.listdir(secret)) == [".ssh"]  # nothing planted in the 'home'
    # guest root is no better: the links resolve in the guest, where the host's folders do not exist
    code, out_b, _ = vm.ssh(f"cat {share}/to-key {share}/to-home/.ssh/id_rsa {share}/up/.ssh/id_rsa 2>&1")
    assert code != 0 and b"SECRET" not in out_b


def test_a_missing_host_folder_fails_with_the_reason(vm: VmMachine) -> None:
    path = f"/var/tmp/pm-sshfs-missing-{uuid.uuid4().hex[:8]}"
    answer = call(vm, "share-mount", share=path)
    assert not answer["ok"] and "does not exist" in answer["error"]
    assert share_state(vm, Path(path))["state"] == "failed"
    call(vm, "share-unmount", share=path)


def test_the_mount_comes_back_after_the_ssh_link_is_cut(vm: VmMachine, share: Path) -> None:
    (share / "survivor.txt").write_text("still here\n")
    before = share_state(vm, share)["mounts"]
    reconnects = call(vm, "status")["link"]["reconnects"]
    assert call(vm, "drop-link")["ok"]
    wait_for(lambda: call(vm, "status")["link"]["reconnects"] > reconnects, "the link to come back")
    wait_for(lambda: call(vm, "status")["state"] == "ready", "ready again")
    # ready is reported only after the shares are mounted again: no polling for the mount itself
    assert share_state(vm, share)["state"] == "mounted"
    assert share_state(vm, share)["mounts"] == before + 1
    assert sh(vm, share, "cat /data/survivor.txt").stdout == "still here\n"
