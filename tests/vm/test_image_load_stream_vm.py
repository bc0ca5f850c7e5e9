"""`docker load` / `docker save` of a large image through the engine socket's fast path on the shared machine
`ha` (direct-QEMU driver): the guest agent unpacks the layers while the upload streams in (images/staging.py),
and the saved archive holds the same layer tar byte for byte (save streams, its blob by sendfile). A second
load of an archive cut short in its layer leaves no image, and the connection's client then still works."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, wait_for
from support.registry import busybox_layer, docker_archive, entry, file, tar_bytes


@pytest.fixture(autouse=True)
def _back_to_auto(ha_vm: VmMachine) -> Iterator[None]:
    from pymachine.hostvm.hostagent import control

    yield
    control.call(ha_vm.home / "m" / ha_vm.name / "ha.sock", "engine-path", via="auto")


def test_a_large_load_and_save_through_the_fast_path(ha_vm: VmMachine, tmp_path: Path) -> None:
    from pymachine.hostvm.hostagent import control, launcher

    control.call(ha_vm.home / "m" / ha_vm.name / "ha.sock", "engine-path", via="fast")  # not the serial port
    wait_for(
        lambda: launcher.status(ha_vm.name)["engine_socket"]["via"] == "fast", "the fast path to be armed"
    )
    payload = os.urandom(24 << 20)  # ~20 s each way under TCG: large enough to stream in many reads
    layer = tar_bytes([entry("data/", tarfile.DIRTYPE, 0o755), file("data/blob", payload)])
    archive = tmp_path / "big.tar"
    archive.write_bytes(docker_archive([busybox_layer(), layer], ["streamed:1"]))
    before = launcher.status(ha_vm.name)["engine_socket"]["fast"]
    assert "Loaded image: streamed:1" in ha_vm.docker("load", "-i", str(archive), timeout=600).stdout
    # the unpacked layer in the guest (not through a container: a container start is not what this tests)
    lower = ha_vm.docker("image", "inspect", "streamed:1", "-f", "{{.GraphDriver.Data.LowerDir}}").stdout
    rc, out, err = ha_vm.ssh(f"sha256sum {lower.strip().split(':')[0]}/data/blob")
    assert rc == 0 and out.split()[0].decode() == hashlib.sha256(payload).hexdigest(), (rc, out, err)

    saved = tmp_path / "saved.tar"
    ha_vm.docker("save", "-o", str(saved), "streamed:1", timeout=600)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        back = tar.extractfile(manifest[0]["Layers"][-1]).read()  # type: ignore[union-attr]
    assert back == layer

    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    proc = ha_vm.docker("load", "-i", str(cut), check=False, timeout=600)
    assert proc.returncode != 0 and "cut short" in proc.stderr, proc
    after = launcher.status(ha_vm.name)["engine_socket"]["fast"]
    assert after["connections"] > before["connections"] and after["fallbacks"] == before["fallbacks"]
    ha_vm.docker("rmi", "streamed:1")
    assert "streamed" not in ha_vm.docker("images").stdout
