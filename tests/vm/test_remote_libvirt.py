"""A machine on a remote libvirt (`--connect qemu+libssh://root@HOST:PORT/system?...`): this machine's
libvirtd reached through a real OpenSSH sshd, as a remote host's would be. One boot for the whole file.

The sshd listens on this machine's loopback (not in a network namespace like the ssh driver's tests):
libvirtd and its QEMU run in this machine's network namespace, so the VM's forwarded SSH port is on *this*
loopback, and the sshd that plays "the host" must share it to reach "the host's loopback". That the guest is
then reached through the tunnel, not straight, is checked by who holds the connections to that port: sshd.

libvirt's own link uses libssh (`qemu+libssh://`), whose `known_hosts` parameter pins the host's key without
touching root's ~/.ssh; `qemu+ssh://` is the same code path in pymachine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.hostagent_sshd import LocalSshd, unavailable
from support.machines import ensure_libvirtd, home_env, new_home, unique_name

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@dataclass
class RemoteVM:
    name: str
    home: Path
    uri: str
    sshd: LocalSshd
    progress: list[str]


@pytest.fixture(scope="module")
def remote_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteVM]:
    pytest.importorskip("libvirt")
    ensure_libvirtd()
    from pymachine.hostvm import machines

    root = tmp_path_factory.mktemp("lvhost")
    sshd = LocalSshd(root).start()
    known = root / "known_hosts"
    host_pub = (root / "host_key.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(host_pub)}\n")
    uri = (
        f"qemu+libssh://root@127.0.0.1:{sshd.port}/system?keyfile={root / 'client_key'}"
        f"&known_hosts={known}&sshauth=privkey"
    )
    home, name = new_home(), unique_name("rlv")
    said: list[str] = []
    try:
        with home_env(home):
            machines.create(
                name, driver="libvirt", connect=uri, home_mount=False, progress=lambda m: said.append(str(m))
            )
            machines.start(name, progress=lambda m: said.append(str(m)))
        print("\n".join(said))  # the stages' seconds, for --durations readers (-s)
        yield RemoteVM(name, home, uri, sshd, said)
    finally:
        with home_env(home), contextlib.suppress(Exception):
            if machines.exists(name):
                machines.delete(name, force=True)
        sshd.stop()
        shutil.rmtree(home, ignore_errors=True)
        _prune_stale_images()


def _prune_stale_images() -> None:
    """The pool keeps one image per recipe for the next machine; on this machine the recipe changes with every
    edit of the guest sources, so keep only the newest (the next run's upload is then skipped)."""
    from pymachine.hostvm import remote_libvirt

    with contextlib.suppress(Exception):
        pool = _local_conn().storagePoolLookupByName(remote_libvirt.POOL)
        pool.refresh(0)
        vols = [pool.storageVolLookupByName(n) for n in pool.listVolumes()]
        bases = sorted(
            (v for v in vols if v.name().startswith("base-")), key=lambda v: os.stat(v.path()).st_mtime
        )
        stale = {v.name().removeprefix("base-").removesuffix(".qcow2") for v in bases[:-1]}
        for v in vols:
            if any(v.name().endswith(tag) or v.name().endswith(tag + ".qcow2") for tag in stale):
                v.delete(0)


def _local_conn():  # type: ignore[no-untyped-def]
    import libvirt

    return libvirt.open("qemu:///system")


def test_the_vm_runs_from_the_hosts_pool_not_from_this_computers_files(remote_vm: RemoteVM) -> None:
    from pymachine.hostvm import remote_libvirt

    said = "\n".join(remote_vm.progress)
    assert "host key on first use" in said  # the libvirt host's key was pinned, and shown
    conn = _local_conn()
    dom = conn.lookupByName(f"pymachine-{remote_vm.name}")
    xml = dom.XMLDesc(0)
    sources = re.findall(r"<source file='([^']+)'", xml) + re.findall(r"<(?:kernel|initrd)>([^<]+)<", xml)
    assert len(sources) >= 4  # disk (and its backing file, live), seed, kernel, initrd
    assert all(s.startswith(remote_libvirt.POOL_DIR + "/") for s in sources), sources
    # nothing the VM reads or writes lives in the machine folder (its path is only in the owner metadata)
    logs = re.findall(r"<log file='([^']+)'", xml)
    assert logs and not any(str(remote_vm.home) in p for p in sources + logs), (sources, logs)
    pool = conn.storagePoolLookupByName(remote_libvirt.POOL)
    names = set(pool.listVolumes())
    assert {f"{remote_vm.name}.qcow2", f"{remote_vm.name}-seed.tar"} <= names


def test_the_guest_is_reached_through_the_hosts_ssh_link(remote_vm: RemoteVM) -> None:
    from pymachine.hostvm import machines

    with home_env(remote_vm.home):
        m = machines.get(remote_vm.name)
        assert m.state == "running" and m.uri == f"libvirt {remote_vm.uri}"
    env = {**os.environ, "DOCKER_HOST": f"unix://{remote_vm.home}/m/{remote_vm.name}/docker.sock"}
    version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert version.returncode == 0, version.stderr
    # every connection to the VM's forwarded port comes from the "host"'s sshd (direct-tcpip), none from us
    peers = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{m.ssh_port} )"],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert "sshd" in peers and "python" not in peers, peers
    ssh = subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", "ssh", remote_vm.name, "--", "echo", "in-the-vm"],
        env={**os.environ, "PYMACHINE_HOME": str(remote_vm.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ssh.stdout.strip() == "in-the-vm", ssh.stderr


def test_stop_and_delete_remove_the_domain_and_the_machines_volumes(remote_vm: RemoteVM) -> None:
    import libvirt

    from pymachine.hostvm import machines, remote_libvirt

    with home_env(remote_vm.home):
        assert machines.stop(remote_vm.name).state == "stopped"
        machines.delete(remote_vm.name)
    conn = _local_conn()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(f"pymachine-{remote_vm.name}")
    pool = conn.storagePoolLookupByName(remote_libvirt.POOL)
    pool.refresh(0)
    left = [v for v in pool.listVolumes() if v.startswith(remote_vm.name)]
    assert left == []
