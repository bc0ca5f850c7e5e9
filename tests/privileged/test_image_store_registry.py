"""Pull and push against a real local registry (Debian's docker-registry on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.registry import Registry, busybox_archive, docker_archive, file, local_registry, tar_bytes

from pymachine_agent.images import DigestMismatch, ImageError, ImageStore, RegistryError

BB = "pymachine/busybox:latest"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg  # type: ignore[misc]


def _store(tmp_path: Path, name: str = "store") -> ImageStore:
    s = ImageStore(tmp_path / name)
    s.load(io.BytesIO(busybox_archive()))
    return s


def test_push_remove_pull_back(registry: Registry, tmp_path: Path) -> None:
    store = _store(tmp_path)
    ref = f"{registry.host}/roundtrip/bb:1"
    store.tag(BB, ref)
    image_id = store.resolve(ref)
    pushed: list[dict[str, Any]] = []
    digest = store.push(ref, progress=pushed.append)
    assert {"status": "Pushed", "progressDetail": {}, "id": image_id[7:19]} in pushed
    assert pushed[-1]["aux"]["Digest"] == digest
    assert store.inspect(ref)["RepoDigests"] == [f"{registry.host}/roundtrip/bb@{digest}"]
    before = (store.layer_dirs(ref)[0] / "bin/busybox").read_bytes()

    assert store.remove(ref)[0] == {"Untagged": ref}
    store.remove(BB)
    assert store.list() == []

    msgs: list[dict[str, Any]] = []
    assert store.pull(ref, progress=msgs.append) == image_id
    statuses = [m["status"] for m in msgs]
    assert "Pulling fs layer" in statuses and "Pull complete" in statuses
    assert f"Digest: {digest}" in statuses and statuses[-1].startswith("Status: Downloaded newer image")
    assert (store.layer_dirs(ref)[0] / "bin/busybox").read_bytes() == before
    info = store.inspect(ref)
    assert info["RepoTags"] == [ref] and info["RepoDigests"] == [f"{registry.host}/roundtrip/bb@{digest}"]

    again: list[dict[str, Any]] = []
    store.pull(ref, progress=again.append)
    assert any(m["status"] == "Already exists" for m in again)
    assert again[-1]["status"] == f"Status: Image is up to date for {ref}"

    other = ImageStore(tmp_path / "by-digest")
    assert other.pull(f"{registry.host}/roundtrip/bb@{digest}") == image_id
    assert other.inspect(image_id)["RepoTags"] == []


def test_pushing_again_reuses_layers(registry: Registry, tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.tag(BB, f"{registry.host}/reuse/a:1")
    store.tag(BB, f"{registry.host}/reuse/a:2")
    store.push(f"{registry.host}/reuse/a:1")
    msgs: list[dict[str, Any]] = []
    store.push(f"{registry.host}/reuse/a:2", progress=msgs.append)
    assert [m["status"] for m in msgs if m.get("id")].count("Layer already exists") == 2  # layer + config


def _put_index(registry: Registry, repo: str, tag: str, entries: list[tuple[str, str, int]]) -> str:
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": digest,
                "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            }
            for arch, digest, size in entries
        ],
    }
    body = json.dumps(index).encode()
    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": index["mediaType"]},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _manifest_size(registry: Registry, repo: str, digest: str) -> int:
    req = urllib.request.Request(
        f"http://{registry.host}/v2/{repo}/manifests/{digest}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(req) as resp:
        return int(resp.headers["Content-Length"])


def test_manifest_list_picks_linux_amd64(registry: Registry, tmp_path: Path) -> None:
    store = _store(tmp_path)
    repo = "multi/app"
    other_layer = tar_bytes([file("arm-only", b"not for amd64")])
    store.load(io.BytesIO(docker_archive([other_layer], ["armish:1"])))
    store.tag(BB, f"{registry.host}/{repo}:amd")
    store.tag("armish:1", f"{registry.host}/{repo}:arm")
    amd = store.push(f"{registry.host}/{repo}:amd")
    arm = store.push(f"{registry.host}/{repo}:arm")
    index_digest = _put_index(
        registry,
        repo,
        "multi",
        [
            ("arm64", arm, _manifest_size(registry, repo, arm)),
            ("amd64", amd, _manifest_size(registry, repo, amd)),
        ],
    )
    fresh = ImageStore(tmp_path / "fresh")
    image_id = fresh.pull(f"{registry.host}/{repo}:multi")
    assert image_id == store.resolve(BB)
    # RepoDigests names what the tag pointed at: the index, as Docker does
    assert fresh.inspect(image_id)["RepoDigests"] == [f"{registry.host}/{repo}@{index_digest}"]


def test_corrupted_blob_is_detected_and_nothing_is_kept(registry: Registry, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "src")
    layer = tar_bytes([file("data.bin", b"payload " * 1000)])
    store.load(io.BytesIO(docker_archive([layer], ["corrupt:1"])))
    ref = f"{registry.host}/corrupt/x:1"
    store.tag("corrupt:1", ref)
    store.push(ref)
    diff_id = store.config(ref)["rootfs"]["diff_ids"][0]
    blob_digest = next(d for d in store.layer_meta(diff_id)["blobs"] if d != diff_id)  # the pushed gzip blob
    data_file = (
        registry.storage / "docker/registry/v2/blobs/sha256" / blob_digest[7:9] / blob_digest[7:] / "data"
    )
    original = data_file.read_bytes()
    try:
        data_file.write_bytes(original[:-8] + bytes(b ^ 0xFF for b in original[-8:]))
        fresh = ImageStore(tmp_path / "fresh")
        with pytest.raises(DigestMismatch, match=blob_digest):
            fresh.pull(ref)
        assert not fresh.exists(ref)
        assert list((fresh.root / "layers").iterdir()) == []
        assert list((fresh.root / "tmp").iterdir()) == []
    finally:
        data_file.write_bytes(original)


def test_missing_tag_and_unreachable_registry(registry: Registry, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    with pytest.raises(RegistryError) as err:
        store.pull(f"{registry.host}/no/such:tag")
    assert err.value.status == 404 and "not found" in str(err.value)
    with pytest.raises(RegistryError):
        store.pull("127.0.0.1:9/nothing:here")  # discard port: connection refused


def test_basic_auth_registry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with local_registry(tmp_path / "authreg", users={"alice": "s3cret"}) as reg:
        ref = f"{reg.host}/private/bb:1"
        store.tag(BB, ref)
        with pytest.raises(RegistryError) as err:
            store.push(ref)
        assert err.value.status == 401
        digest = store.push(ref, auth={"username": "alice", "password": "s3cret"})
        fresh = ImageStore(tmp_path / "fresh")
        with pytest.raises(RegistryError) as err:
            fresh.pull(ref, auth={"username": "alice", "password": "wrong"})
        assert err.value.status == 401
        assert fresh.pull(ref, auth={"username": "alice", "password": "s3cret"}) == store.resolve(BB)
        assert fresh.inspect(ref)["RepoDigests"] == [f"{reg.host}/private/bb@{digest}"]


def test_a_blob_longer_than_its_descriptor_is_cut_off(registry: Registry, tmp_path: Path) -> None:
    store = _store(tmp_path)
    ref = f"{registry.host}/liar/bb:honest"
    store.tag(BB, ref)
    store.push(ref)
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    url = f"http://{registry.host}/v2/liar/bb/manifests/"
    with urllib.request.urlopen(urllib.request.Request(url + "honest", headers={"Accept": accept})) as resp:
        manifest = json.load(resp)
    manifest["layers"][0]["size"] -= 1000  # the registry checks that blobs exist, not their sizes
    put = urllib.request.Request(
        url + "liar", data=json.dumps(manifest).encode(), method="PUT", headers={"Content-Type": accept}
    )
    with urllib.request.urlopen(put) as resp:
        assert resp.status == 201
    fresh = ImageStore(tmp_path / "fresh")
    with pytest.raises(ImageError, match="larger than the .* bytes its descriptor announced"):
        fresh.pull(f"{registry.host}/liar/bb:liar")
    assert list((fresh.root / "layers").iterdir()) == [] and list((fresh.root / "tmp").iterdir()) == []


def test_a_committed_image_pushes_its_gzip_blob_and_pulls_back(registry: Registry, tmp_path: Path) -> None:
    store = _store(tmp_path)
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "built").write_text("by a RUN step")
    ref = f"{registry.host}/built/app:1"
    image_id = store.commit(upper, BB, {"Cmd": ["cat", "/built"]}, tag=ref)
    store.push(ref)
    fresh = ImageStore(tmp_path / "fresh")
    assert fresh.pull(ref) == image_id
    assert (fresh.layer_dirs(ref)[-1] / "built").read_text() == "by a RUN step"
