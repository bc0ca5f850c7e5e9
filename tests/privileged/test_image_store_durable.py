"""Layers are on the disk before an image names them, and a layer an older agent left incomplete is found when
the store opens (images/durable.py).

The crash itself (QEMU killed as `docker load` returns) is tests/vm/test_image_crash_vm.py. Here, the store on
this host: a load flushes the filesystem once, however many layers it placed, and marks its layers; a store
written before the flush (no mark) with a file a crash cut short, in a tar-split layer (`docker load`) or a
layer kept with its gzip blob (a pull, a compressed load), loses that layer and the images using it, with one
warning naming them; a whole unmarked layer, however tricky its tar (names replaced, whited out, hard links),
is kept and marked, and an image that shares nothing with the broken layer stays.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import pytest
from support.registry import docker_archive, entry, file, tar_bytes

from pymachine_agent import atomic
from pymachine_agent.images import durable
from pymachine_agent.images.store import ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps owners: needs root")


def tricky() -> bytes:
    seed = os.urandom(8)
    return tar_bytes(
        [
            entry("srv/", tarfile.DIRTYPE, 0o755),
            file("srv/twice", os.urandom(5000)),
            file("srv/twice", b"second" + seed),  # the same name again: the later size counts
            entry("srv/dir/", tarfile.DIRTYPE, 0o755),
            file("srv/dir/inner", os.urandom(700)),
            file("srv/dir", b"now a file"),  # its folder replaced: inner is gone
            file("srv/gone", os.urandom(1000)),
            entry("srv/.wh.gone", tarfile.REGTYPE),  # whited out by the same layer
            file("srv/orig", os.urandom(3000)),
            entry("srv/link", tarfile.LNKTYPE, linkname="srv/orig"),
            entry("srv/orig", tarfile.SYMTYPE, 0o777, linkname="link"),
            file("srv/empty", b""),
        ]
    )


def data_layer(size: int = 300_000) -> bytes:
    return tar_bytes([entry("data/", tarfile.DIRTYPE, 0o755), file("data/blob", os.urandom(size))])


def load(store: ImageStore, layers: list[bytes], tag: str) -> str:
    assert store.load(io.BytesIO(docker_archive(layers, [tag]))) == [tag]
    return store.resolve(tag)


def unflush(store: ImageStore) -> None:
    """Make the store look as an agent older than the flush left it: no layer carries the mark."""
    for path in (store.root / "layers").iterdir():
        meta = json.loads((path / "layer.json").read_text())
        meta.pop(durable.FLUSHED, None)
        (path / "layer.json").write_text(json.dumps(meta))


def test_a_load_flushes_once_and_marks_its_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path / "images")
    flushes: list[str] = []
    real = atomic.sync_filesystem
    monkeypatch.setattr(atomic, "sync_filesystem", lambda p: (flushes.append(str(p)), real(p)))
    first = tricky()
    load(store, [first, data_layer(), gzip.compress(data_layer())], "three:1")
    assert flushes == [str(store.root)]  # one syncfs for the load's three layers
    for path in (store.root / "layers").iterdir():
        assert json.loads((path / "layer.json").read_text())[durable.FLUSHED] is True
    load(store, [first], "again:1")  # nothing new placed but the config: no second flush
    assert flushes == [str(store.root)]


def test_a_cut_file_in_an_unflushed_layer_removes_it_with_its_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ImageStore(tmp_path / "images")
    shared, bad = tricky(), data_layer()
    load(store, [shared, bad], "cut:1")
    store.tag("cut:1", "cut:also")
    kept = load(store, [shared, data_layer(1000)], "kept:1")  # shares only the whole layer
    unflush(store)
    bad_id = json.loads(store.blob_path(store.resolve("cut:1")).read_bytes())["rootfs"]["diff_ids"][1]
    blob = store.layer_root(bad_id) / "diff" / "data" / "blob"
    os.truncate(blob, 4096)  # what ext4 kept of a file whose data had not been written back

    with caplog.at_level(logging.WARNING, logger="pymachine_agent.images"):
        reopened = ImageStore(tmp_path / "images")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"layer {bad_id} is incomplete on disk (layer file diff/data/blob" in warnings[0]
    assert "4096 bytes, not 300000" in warnings[0] and "cut:1, cut:also" in warnings[0]
    assert "Load or pull them again" in warnings[0]
    assert not reopened.exists("cut:1") and not reopened.exists("cut:also")
    assert not reopened.layer_root(bad_id).exists()
    assert reopened.resolve("kept:1") == kept  # its layers are whole: kept, and marked
    for diff_id in reopened.record(kept)["layers"]:
        assert reopened.layer_meta(diff_id)[durable.FLUSHED] is True
    caplog.clear()
    ImageStore(tmp_path / "images")  # marked: not checked again, nothing said
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_cut_file_in_a_layer_kept_as_its_gzip_blob_is_found(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    layer = data_layer()
    load(store, [gzip.compress(tricky()), gzip.compress(layer)], "gz:1")
    load(store, [gzip.compress(tricky()), gzip.compress(data_layer())], "whole:1")
    unflush(store)
    diff_id = json.loads(store.blob_path(store.resolve("gz:1")).read_bytes())["rootfs"]["diff_ids"][1]
    assert durable.problem(store, diff_id) is None  # a gzip blob, not a tar-split index: read the blob
    os.truncate(store.layer_root(diff_id) / "diff" / "data" / "blob", 0)
    assert durable.problem(store, diff_id) == "data/blob has 0 of its 300000 bytes"
    reopened = ImageStore(tmp_path / "images")
    assert not reopened.exists("gz:1") and reopened.exists("whole:1")  # the tricky layer is whole
