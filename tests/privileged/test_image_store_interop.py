"""Interoperability with an independent implementation (skopeo, containers/image) and concurrent pulls."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from support.registry import Registry, busybox_archive, local_registry

from pymachine_agent.images import ImageStore

BB = "pymachine/busybox:latest"
pytestmark = pytest.mark.skipif(
    not shutil.which("skopeo"), reason="skopeo is not installed (apt-get install skopeo)"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg  # type: ignore[misc]


def skopeo(*args: str) -> str:
    cmd = ["skopeo", "--insecure-policy", "--override-os", "linux", "--override-arch", "amd64", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_skopeo_reads_what_we_save_and_push(registry: Registry, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    image_id = store.resolve(BB)
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as f:
        store.save([BB], f)
    info = json.loads(skopeo("inspect", "--config", f"docker-archive:{archive}"))
    assert info["rootfs"]["diff_ids"] == store.config(BB)["rootfs"]["diff_ids"]
    # skopeo copies our archive into the registry; we pull it back: same image ID
    skopeo(
        "copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{registry.host}/sk/bb:1"
    )
    fresh = ImageStore(tmp_path / "fresh")
    assert fresh.pull(f"{registry.host}/sk/bb:1") == image_id
    # and what we push, skopeo reads from the registry
    store.tag(BB, f"{registry.host}/ours/bb:1")
    digest = store.push(f"{registry.host}/ours/bb:1")
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/ours/bb:1"))
    assert remote["Digest"] == digest


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_we_load_archives_skopeo_writes(registry: Registry, tmp_path: Path, transport: str) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    store.tag(BB, f"{registry.host}/src/bb:1")
    store.push(f"{registry.host}/src/bb:1")
    out = tmp_path / "skopeo.tar"
    dest = f"{transport}:{out}:example.com/made/by-skopeo:7"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/src/bb:1", dest)
    fresh = ImageStore(tmp_path / "fresh")
    with open(out, "rb") as f:
        loaded = fresh.load(f)
    assert loaded == ["example.com/made/by-skopeo:7"]  # OCI: skopeo puts the whole name in ref.name
    if transport == "docker-archive":  # config bytes kept: same image ID (oci-archive rewrites the config)
        assert fresh.resolve(loaded[0]) == store.resolve(BB)
    assert fresh.config(loaded[0])["rootfs"] == store.config(BB)["rootfs"]
    assert (fresh.layer_dirs(loaded[0])[0] / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()


def test_concurrent_pulls_of_one_image_share_its_layer(registry: Registry, tmp_path: Path) -> None:
    src = ImageStore(tmp_path / "src")
    src.load(io.BytesIO(busybox_archive()))
    ref = f"{registry.host}/conc/bb:1"
    src.tag(BB, ref)
    src.push(ref)
    store = ImageStore(tmp_path / "s")
    results: list[str] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(store.pull(ref))
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [src.resolve(BB)] * 3
    assert len(list((store.root / "layers").iterdir())) == 1
    assert list((store.root / "tmp").iterdir()) == []
