"""An image whose `docker load` returned survives QEMU being killed at that moment (direct-QEMU driver).

The load answers before the guest's page cache reached the disk (ext4 writes a file's data back up to 30 s
later, while the image record is fsynced at once). Killed then, the machine came back with the image listed
and its files empty or cut short: ext4 had committed the names and the record, not the data. The store now
flushes the filesystem (syncfs) once before an image record names new layers, so what `load` reports loaded
is on the disk. (The start-time check of layers an older agent left incomplete is in
tests/privileged/test_image_store_durable.py: it needs a store that a crash damaged, which the fixed agent no
longer makes.)
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, booted_machine, env_of, wait_for
from support.registry import busybox_layer, docker_archive, entry, file, tar_bytes

from pymachine.hostvm.drivers import procscan

FILES = 40  # small files besides one large one: ext4 loses each one's delayed data alike


@pytest.fixture(scope="module")
def cm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmMachine]:
    base = tmp_path_factory.mktemp("rc")
    with booted_machine(base, "robustcrash", home_mount=False) as machine, env_of(machine):
        yield machine


def test_a_load_survives_qemu_killed_as_it_returns(cm: VmMachine, tmp_path: Path) -> None:
    big = os.urandom(16 << 20)
    small = [os.urandom(4096 + i) for i in range(FILES)]
    layer = tar_bytes(
        [entry("data/", tarfile.DIRTYPE, 0o755), file("data/big", big)]
        + [file(f"data/s{i:02d}", d) for i, d in enumerate(small)]
    )
    archive = tmp_path / "crash.tar"
    archive.write_bytes(docker_archive([busybox_layer(), layer], ["crash:1"]))
    want = {"/data/big": hashlib.sha256(big).hexdigest()}
    want.update({f"/data/s{i:02d}": hashlib.sha256(d).hexdigest() for i, d in enumerate(small)})

    qemu = int((cm.home / "m" / cm.name / "qemu.pid").read_text())
    assert "Loaded image: crash:1" in cm.docker("load", "-i", str(archive), timeout=600).stdout
    os.kill(qemu, signal.SIGKILL)  # as a power cut: what the guest had not flushed is gone
    wait_for(lambda: not procscan.alive(qemu), "QEMU to be gone", 30)
    start = cm.pymachine("start", cm.name)
    print(start.stdout, start.stderr, file=sys.stderr)

    assert "crash:1" in cm.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    run = cm.docker("run", "--rm", "crash:1", "busybox", "sha256sum", *sorted(want), check=False, timeout=300)
    got = {line.split()[1]: line.split()[0] for line in run.stdout.splitlines() if line.strip()}
    lower = cm.docker("image", "inspect", "crash:1", "-f", "{{.GraphDriver.Data.LowerDir}}").stdout.strip()
    top, bottom = lower.split(":")[0], lower.split(":")[-1]  # the data layer, the busybox layer
    _, sizes, _ = cm.ssh(f"ls -l {bottom}/bin/busybox {top}/data | head -8")
    assert got == want, f"{run.stderr}\nfiles after the crash:\n{sizes.decode()}"
