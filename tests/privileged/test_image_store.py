"""The image store on real files: load, inspect, tag, remove rules, save→load, OCI layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from support.registry import busybox_archive, busybox_layer, docker_archive, file, image_config, tar_bytes

from pymachine_agent.images import ArchiveError, DigestMismatch, ImageConflict, ImageNotFound, ImageStore

BB = "pymachine/busybox:latest"


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "store")
    assert s.load(io.BytesIO(busybox_archive())) == [BB]
    return s


def test_load_gives_inspect_list_history_and_layer_dirs(store: ImageStore) -> None:
    info = store.inspect("pymachine/busybox")
    assert info["Id"].startswith("sha256:") and len(info["Id"]) == 71
    config_bytes = store.blob_path(info["Id"]).read_bytes()
    assert info["Id"] == "sha256:" + hashlib.sha256(config_bytes).hexdigest()  # ID = digest of the config
    assert info["RepoTags"] == [BB]
    assert info["Config"]["Cmd"] == ["sh"] and info["Config"]["Env"] == ["PATH=/bin"]
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert info["Size"] >= Path("/bin/busybox").stat().st_size
    (layer,) = store.layer_dirs(BB)
    assert (layer / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (layer / "bin/sh").readlink() == Path("busybox")
    [row] = store.list()
    assert row["Id"] == info["Id"] and row["RepoTags"] == [BB] and row["Created"] == 1704164645
    [hist] = store.history(info["Id"][7:19])  # a short ID prefix resolves too
    assert hist["Id"] == info["Id"] and hist["CreatedBy"] == "layer 0" and hist["Tags"] == [BB]
    assert store.config(BB)["rootfs"]["diff_ids"] == info["RootFS"]["Layers"]


def test_lookup_forms_and_missing_image(store: ImageStore) -> None:
    image_id = store.resolve(BB)
    for ref in (
        "pymachine/busybox",
        "docker.io/pymachine/busybox:latest",
        image_id,
        image_id[7:],
        image_id[7:15],
    ):
        assert store.resolve(ref) == image_id
    with pytest.raises(ImageNotFound, match=r"No such image: busybox:latest"):
        store.resolve("busybox")
    assert ImageNotFound.status == 404


def test_tag_and_remove_follow_docker_rules(store: ImageStore) -> None:
    image_id = store.resolve(BB)
    store.tag(BB, "localhost:5000/bb:v1")
    assert sorted(store.inspect("localhost:5000/bb:v1")["RepoTags"]) == sorted(["localhost:5000/bb:v1", BB])
    store.tag(BB, "other:1")

    def users(i: str) -> list[str]:
        return ["c0ffee" * 10] if i == image_id else []

    # by ID while referenced from several repositories: refused unless forced
    with pytest.raises(ImageConflict, match="referenced in multiple repositories"):
        store.remove(image_id)
    # one of several tags: only untagged, even while in use
    assert store.remove("other:1", in_use=users) == [{"Untagged": "other:1"}]
    assert store.remove("localhost:5000/bb:v1", in_use=users) == [{"Untagged": "localhost:5000/bb:v1"}]
    # the last tag of an image a container uses: refused, naming the container
    with pytest.raises(ImageConflict, match=r"must force\) - container c0ffeec0ffee is using"):
        store.remove(BB, in_use=users)
    assert store.exists(BB)
    # forced: the name goes, the files stay while the container needs them
    assert store.remove(BB, force=True, in_use=users) == [{"Untagged": BB}]
    assert store.layer_dirs(image_id)[0].is_dir()
    assert store.list()[0]["RepoTags"] == []
    assert store.list({"dangling": {"true": True}})[0]["Id"] == image_id
    # once unused, removing by ID deletes the image and its now unreferenced layer
    layer = store.layer_dirs(image_id)[0]
    assert store.layer_dirs(image_id, short=True)[0].resolve() == layer.resolve()
    assert store.remove(image_id[7:19]) == [{"Deleted": image_id}]
    assert not layer.exists() and store.list() == []
    assert list((store.root / "l").iterdir()) == []  # the short link went with the layer
    assert list(store.root.glob("blobs/sha256/*")) == []


def test_shared_layers_are_unpacked_once_and_kept_while_used(store: ImageStore) -> None:
    base = busybox_layer()
    extra = tar_bytes([file("etc/motd", b"hi\n")])
    config = image_config([base, extra], cmd=["cat", "/etc/motd"])
    store.load(io.BytesIO(docker_archive([base, extra], ["two:layers"], config)))
    bb_dirs, two_dirs = store.layer_dirs(BB), store.layer_dirs("two:layers")
    assert two_dirs[0] == bb_dirs[0] and len(two_dirs) == 2
    assert len(list((store.root / "layers").iterdir())) == 2
    assert store.remove(BB)[-1]["Deleted"]
    assert two_dirs[0].is_dir()  # still used by two:layers
    store.remove("two:layers")
    assert list((store.root / "layers").iterdir()) == []


def test_save_then_load_round_trip(store: ImageStore, tmp_path: Path) -> None:
    store.tag(BB, "saved:1")
    out = io.BytesIO()
    store.save(["saved:1", BB], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        names = t.getnames()
    assert {"manifest.json", "index.json", "oci-layout"} <= set(names)
    other = ImageStore(tmp_path / "other")
    assert sorted(other.load(io.BytesIO(out.getvalue()))) == sorted(["saved:1", BB])
    assert other.resolve("saved:1") == store.resolve(BB)
    a, b = store.layer_dirs(BB)[0], other.layer_dirs(BB)[0]
    assert (a / "bin/busybox").read_bytes() == (b / "bin/busybox").read_bytes()
    # the OCI half of the same tarball loads on its own too
    oci_only = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(out.getvalue())) as src,
        tarfile.open(fileobj=oci_only, mode="w") as dst,
    ):
        for m in src.getmembers():
            if m.name != "manifest.json":
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    third = ImageStore(tmp_path / "third")
    assert sorted(third.load(io.BytesIO(oci_only.getvalue()))) == sorted(["saved:1", BB])


def _oci_layout(layers: list[bytes], name: str | None, corrupt: bool = False) -> bytes:
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d

    config = image_config(layers)
    gz = [gzip.compress(layer, mtime=0) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(g), "size": len(g)}
            for g in gz
        ],
    }
    mbytes = json.dumps(manifest).encode()
    mdesc = {"mediaType": manifest["mediaType"], "digest": put(mbytes), "size": len(mbytes)}
    mdesc["platform"] = {"os": "linux", "architecture": "amd64"}
    arm = {"mediaType": manifest["mediaType"], "digest": "sha256:" + "1" * 64, "size": 1}
    arm["platform"] = {"os": "linux", "architecture": "arm64"}
    nested = json.dumps({"schemaVersion": 2, "manifests": [arm, mdesc]}).encode()  # an index inside the index
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(nested), "size": len(nested)}
    if name:
        top["annotations"] = {"org.opencontainers.image.ref.name": name}
    if corrupt:
        d = manifest["layers"][0]["digest"]
        blobs[d] = blobs[d][:-1] + bytes([blobs[d][-1] ^ 1])
    items = [file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    items += [file("blobs/sha256/" + d[7:], data) for d, data in blobs.items()]
    items.append(file("index.json", json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()))
    return tar_bytes(items)


def test_load_oci_layout_with_gzip_layers_and_nested_index(tmp_path: Path) -> None:
    s = ImageStore(tmp_path / "s")
    layers = [busybox_layer(), tar_bytes([file("hello", b"world")])]
    assert s.load(io.BytesIO(_oci_layout(layers, "example.com/team/app:2"))) == ["example.com/team/app:2"]
    top = s.layer_dirs("example.com/team/app:2")[1]
    assert (top / "hello").read_bytes() == b"world"
    assert s.load(io.BytesIO(_oci_layout(layers[1:], None)))[0].startswith("sha256:")


def test_load_detects_a_corrupted_blob_and_bad_archives(tmp_path: Path) -> None:
    s = ImageStore(tmp_path / "s")
    with pytest.raises(DigestMismatch):
        s.load(io.BytesIO(_oci_layout([tar_bytes([file("x", b"y")])], "bad:1", corrupt=True)))
    assert not s.exists("bad:1")
    with pytest.raises(ArchiveError):
        s.load(io.BytesIO(tar_bytes([file("hello", b"x")])))
    with pytest.raises(ArchiveError):
        s.load(io.BytesIO(b"not a tar at all" * 64))


def test_prune_removes_dangling_and_orphan_layers(store: ImageStore) -> None:
    image_id = store.resolve(BB)
    store.remove(BB, force=True, in_use=lambda i: ["x"])
    assert store.prune(in_use=lambda i: ["x"])["ImagesDeleted"] is None
    report = store.prune()
    assert report["ImagesDeleted"] == [{"Deleted": image_id}] and report["SpaceReclaimed"] > 0
    assert store.list() == []


def test_load_the_shared_busybox_tarball(tmp_path: Path) -> None:
    from support.agent import busybox_tarball  # the builder's pymachine/busybox when present

    s = ImageStore(tmp_path / "shared")
    with open(busybox_tarball(), "rb") as f:
        assert s.load(f) == [BB]
    top = s.layer_dirs(BB)[-1]
    assert any((d / "bin/busybox").exists() or (d / "usr/bin/busybox").exists() for d in s.layer_dirs(BB))
    assert top.is_dir() and s.inspect(BB)["Os"] == "linux"


def test_load_from_a_pipe_and_a_gzipped_archive(tmp_path: Path) -> None:
    import os
    import threading

    data = busybox_archive("piped/bb:1")
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    threading.Thread(target=feed, daemon=True).start()
    s = ImageStore(tmp_path / "s")
    with os.fdopen(read_fd, "rb") as pipe:  # not seekable: load spools it
        assert s.load(pipe) == ["piped/bb:1"]
    assert s.load(io.BytesIO(gzip.compress(busybox_archive("gz/bb:1")))) == [
        "gz/bb:1"
    ]  # `docker load < x.tar.gz`
    assert list((s.root / "tmp").iterdir()) == []


def test_reopening_the_store_clears_what_a_crash_left(store: ImageStore) -> None:
    image_id = store.resolve(BB)
    store.add_layer(io.BytesIO(tar_bytes([file("orphan", b"x")])), None)  # unpacked, no image yet: "crash"
    stray_blob = store.write_blob(b"config written just before a crash")
    debris = store.tmp_dir()
    (debris / "half-unpacked").mkdir()
    assert len(list((store.root / "layers").iterdir())) == 2
    reopened = ImageStore(store.root)
    assert reopened.resolve(BB) == image_id
    assert len(list((store.root / "layers").iterdir())) == 1
    assert not reopened.has_blob(stray_blob) and reopened.has_blob(image_id)
    assert list((store.root / "tmp").iterdir()) == []
    assert (reopened.layer_dirs(BB)[0] / "bin/busybox").exists()
