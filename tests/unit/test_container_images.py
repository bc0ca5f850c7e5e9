"""Base container images: name parsing, recipe hash, the docker-archive layout, and the real busybox build."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from pymachine.hostvm import container_images
from pymachine.hostvm.errors import NotFoundError
from pymachine.hostvm.image_docker_archive import LayerWriter, image_config, write_docker_archive


def test_names_and_tags() -> None:
    assert container_images.parse_name("pymachine/busybox") == ("pymachine/busybox", "latest", "busybox")
    assert container_images.parse_name("pymachine/busybox:latest")[1] == "latest"
    assert container_images.parse_name("pymachine/debian:bookworm") == (
        "pymachine/debian",
        "bookworm",
        "debian",
    )
    assert container_images.parse_name("pymachine/debian")[1] == "latest"
    with pytest.raises(NotFoundError, match="has no tag 'sid'"):
        container_images.parse_name("pymachine/debian:sid")
    with pytest.raises(NotFoundError, match="not a built-in image"):
        container_images.parse_name("alpine")
    assert set(container_images.BUILTIN_IMAGES) == {"pymachine/busybox", "pymachine/debian"}


def test_recipe_hash_is_stable_and_per_recipe() -> None:
    assert container_images.recipe_hash("busybox") == container_images.recipe_hash("busybox")
    assert container_images.recipe_hash("busybox") != container_images.recipe_hash("debian")


def _read_archive(path: Path) -> tuple[dict, dict, bytes, dict]:  # type: ignore[type-arg]
    """(manifest entry, config, layer bytes, repositories), checking the references between them."""
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert len(manifest) == 1
        entry = manifest[0]
        config_bytes = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert entry["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
        config = json.loads(config_bytes)
        (layer_name,) = entry["Layers"]
        layer = tar.extractfile(layer_name).read()  # type: ignore[union-attr]
        repositories = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    return entry, config, layer, repositories


def test_archive_writer_layout_and_reproducibility(tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        writer = LayerWriter(tmp_path / f"layer-{run}.tar")
        writer.directory("bin")
        writer.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
        writer.symlink("bin/hi", "/bin/hello")
        diff_id = writer.close()
        config = image_config(diff_id, {"Cmd": ["hello"]}, "test")
        out = tmp_path / f"image-{run}.tar"
        image_id = write_docker_archive(
            out, ["x/y:1", "x/y:latest"], tmp_path / f"layer-{run}.tar", diff_id, config
        )
        outputs.append((out.read_bytes(), image_id))
    assert outputs[0] == outputs[1]  # byte-identical archives, same image id
    entry, config, layer, repositories = _read_archive(tmp_path / "image-a.tar")
    assert entry["RepoTags"] == ["x/y:1", "x/y:latest"]
    assert set(repositories["x/y"]) == {"1", "latest"}
    assert config["config"]["Cmd"] == ["hello"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        hello = tar.getmember("bin/hello")
        assert hello.mode == 0o755 and hello.uid == 0 and hello.uname == ""
        assert tar.getmember("bin/hi").linkname == "/bin/hello"


@pytest.fixture(scope="module")
def busybox_archive() -> Path:
    # A real build from Debian's busybox-static (apt-get download + dpkg-deb -x), in the shared test cache.
    mp = pytest.MonkeyPatch()
    mp.setenv("PYMACHINE_CACHE", os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
    try:
        yield container_images.ensure_container_image("pymachine/busybox:latest")
    finally:
        mp.undo()


def test_busybox_archive_contents(busybox_archive: Path) -> None:
    entry, config, layer, repositories = _read_archive(busybox_archive)
    assert entry["RepoTags"] == ["pymachine/busybox:latest"]
    assert repositories == {"pymachine/busybox": {"latest": entry["Layers"][0].split("/")[0]}}
    assert config["config"]["Cmd"] == ["sh"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert {m.mtime for m in tar.getmembers()} == {1704067200}
        assert tar.getmember("bin/busybox").isreg() and tar.getmember("bin/busybox").mode == 0o755
        for applet in ("bin/sh", "bin/ls", "usr/sbin/httpd"):
            assert tar.getmember(applet).linkname == "/bin/busybox", applet
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        assert passwd.startswith("root:x:0:0:") and "\nnobody:x:65534:" in passwd
        assert "nobody" in tar.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
        assert tar.getmember("tmp").mode == 0o1777
        assert b"pymachine" in tar.extractfile("www/index.html").read()  # type: ignore[union-attr]


def test_busybox_build_is_cached(busybox_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_CACHE", str(busybox_archive.parent.parent))
    monkeypatch.setattr(container_images, "_busybox_layer", lambda *a: pytest.fail("rebuilt a cached image"))
    assert container_images.ensure_container_image("pymachine/busybox") == busybox_archive


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_busybox_layer_serves_www_with_httpd(busybox_archive: Path, tmp_path: Path) -> None:
    _, _, layer, _ = _read_archive(busybox_archive)
    root = tmp_path / "root"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        tar.extractall(root, filter="fully_trusted")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["chroot", str(root), "/bin/sh", "-c", f"exec httpd -f -p 127.0.0.1:{port} -h /www"]
    )
    try:
        body = b""
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                body = conn.getresponse().read()
                conn.close()
                break
            except OSError:
                time.sleep(0.1)
        assert b"Hello from pymachine" in body
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)
