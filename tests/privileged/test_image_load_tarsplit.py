"""A loaded uncompressed layer is kept as a tar-split index into its unpacked files (images/tarsplit.py), not
as a second copy of its bytes, and `docker save` still gives the layer tar back byte for byte. Through the
real agent and the docker CLI: layers whose later entries replace, remove or white out files recorded
earlier (the index must not point at content that is gone), hard links, long names and xattrs in PAX
headers, symlinks, fifos, trailing blocks after the end marker; large files (sent by sendfile) and small
ones (written with the headers). A layer file changed after the load makes `save` fail with a status naming
it, before any byte, instead of handing out a tar that is not the layer. `push` reads the rebuilt tar too
(SplitTar.read).

On main the store kept blobs/sha256/<diff_id> for each loaded uncompressed layer (the test that no such blob
exists fails there), and the corrupted-file case saved the stored blob: it did not notice the change.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent
from support.registry import docker_archive, entry, file, tar_bytes

from pymachine_agent.images import ImageError, layers, tarsplit
from pymachine_agent.images.archive import layer_tar_stream
from pymachine_agent.images.store import ImageStore

BIG = 200 * 1024  # above tarsplit's sendfile threshold


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(Path(tmp_path_factory.mktemp("agent"))) as a:
        yield a


def tricky_layers() -> list[bytes]:
    seed = os.urandom(8).hex()  # content no earlier run loaded
    replaced = tar_bytes(
        [
            entry("srv/", tarfile.DIRTYPE, 0o755),
            file("srv/twice", os.urandom(BIG)),  # recorded, then replaced by the next entry of that name
            file("srv/twice", b"second " + seed.encode()),
            entry("srv/dir/", tarfile.DIRTYPE, 0o755),
            file("srv/dir/inner", os.urandom(BIG)),  # under a folder that a file then replaces
            file("srv/dir/small", b"small " + seed.encode()),
            file("srv/dir", b"now a file"),
            file("srv/gone", os.urandom(1000)),  # whited out by the same layer
            entry("srv/.wh.gone", tarfile.REGTYPE),
            file("srv/orig", os.urandom(BIG)),  # hard-linked, then the original name replaced
            entry("srv/link", tarfile.LNKTYPE, linkname="srv/orig"),
            entry("srv/orig", tarfile.SYMTYPE, 0o777, linkname="link"),
        ]
    )
    rich = tar_bytes(
        [
            entry("deep/", tarfile.DIRTYPE, 0o755),
            file("deep/" + "n" * 180 + seed, b"a long name in a PAX header"),
            file("deep/xattr", os.urandom(3000), pax_headers={"SCHILY.xattr.user.k": "v"}),
            file("deep/empty", b""),
            entry("deep/sym", tarfile.SYMTYPE, 0o777, linkname="xattr"),
            entry("deep/fifo", tarfile.FIFOTYPE, 0o644),
            file("deep/big", os.urandom(3 * BIG + 17)),
        ]
    )
    rich += b"\0" * 4096  # blocks after the end marker: part of the layer's bytes and diff_id
    return [replaced, rich]


def saved_layers(agent: Agent, tmp_path: Path, tag: str) -> list[bytes]:
    saved = tmp_path / "saved.tar"
    agent.docker("save", "-o", str(saved), tag, timeout=300)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return [tar.extractfile(name).read() for name in manifest[0]["Layers"]]  # type: ignore[union-attr]


def diff_id(layer: bytes) -> str:
    return "sha256:" + hashlib.sha256(layer).hexdigest()


def test_layers_kept_as_an_index_save_back_byte_for_byte(agent: Agent, tmp_path: Path) -> None:
    layers = tricky_layers()
    archive = tmp_path / "tricky.tar"
    archive.write_bytes(docker_archive(layers, ["tricky:1"]))
    assert "Loaded image: tricky:1" in agent.docker("load", "-i", str(archive), timeout=300).stdout
    root = agent.state_dir / "images"
    for layer in layers:
        hexd = diff_id(layer)[7:]
        assert (root / "layers" / hexd / "tar-split.json").is_file()
        assert not (root / "blobs" / "sha256" / hexd).exists()  # no second copy of the layer's bytes
    diff = root / "layers" / diff_id(layers[0])[7:] / "diff" / "srv"
    assert (diff / "twice").read_bytes().startswith(b"second ")
    assert (diff / "dir").read_bytes() == b"now a file"
    assert (diff / "gone").is_char_device()
    assert saved_layers(agent, tmp_path, "tricky:1") == layers
    agent.docker("rmi", "tricky:1")
    # loaded again from what save gave: the same image, the same bytes
    again = tmp_path / "again.tar"
    agent.docker("load", "-i", str(archive), timeout=300)
    agent.docker("save", "-o", str(again), "tricky:1", timeout=300)
    agent.docker("rmi", "tricky:1")
    agent.docker("load", "-i", str(again), timeout=300)
    assert saved_layers(agent, tmp_path, "tricky:1") == layers
    agent.docker("rmi", "tricky:1")


def test_a_layer_file_changed_after_the_load_fails_the_save_before_its_first_byte(
    agent: Agent, tmp_path: Path
) -> None:
    layer = tar_bytes([file("data/blob", os.urandom(BIG)), file("data/note", os.urandom(100))])
    archive = tmp_path / "changed.tar"
    archive.write_bytes(docker_archive([layer], ["changed:1"]))
    agent.docker("load", "-i", str(archive), timeout=300)
    blob = agent.state_dir / "images" / "layers" / diff_id(layer)[7:] / "diff" / "data" / "blob"
    with open(blob, "ab") as f:
        f.write(b"tampered")
    status, _, body = agent.request("GET", "/v1.44/images/changed:1/get")
    assert status == 500, (status, body[:200])
    assert "data/blob changed since the layer was loaded" in json.loads(body)["message"], body[:300]
    blob.unlink()
    proc = agent.docker("save", "-o", str(tmp_path / "x.tar"), "changed:1", check=False)
    assert proc.returncode != 0 and "data/blob" in proc.stderr, proc
    agent.docker("rmi", "changed:1")


def test_the_rebuilt_tar_reads_as_bytes_too(tmp_path: Path) -> None:
    """What `push` compresses (layer_tar_stream(...).read()) and `save` into a file (no sendfile)."""
    layers = tricky_layers()
    store = ImageStore(tmp_path / "store")
    store.load(io.BytesIO(docker_archive(layers, ["readback:1"])))
    for layer in layers:
        stream, size = layer_tar_stream(store, diff_id(layer))
        with stream:
            pieces = [stream.read(7), stream.read(100_000)]
            while piece := stream.read(1 << 20):
                pieces.append(piece)
        assert size == len(layer) and b"".join(pieces) == layer
    out = io.BytesIO()
    store.save(["readback:1"], out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert [tar.extractfile(n).read() for n in manifest[0]["Layers"]] == layers  # type: ignore[union-attr]


FILES = [
    "a/f",
    "a/g",
    "b/f",
    "a/d/f",
    "a/d/g",
]  # in folders that entries may replace by a file, whiteout or link
FOLDERS = ["a/", "b/", "a/d/"]
WHITEOUTS = ["a/.wh.f", "a/.wh.d", "a/d/.wh.g", "b/.wh..wh..opq"]


def random_layer(rng: random.Random) -> bytes:
    """Names that repeat, so that entries replace, white out and link to each other: files (random content,
    some above the sendfile threshold), folders, a folder replaced by a file, symlinks, hard links."""
    items: list = [entry(d, tarfile.DIRTYPE, 0o755) for d in FOLDERS]
    for _ in range(rng.randint(1, 25)):
        kind = rng.random()
        size = rng.choice([0, 1, 511, 512, 513, 70_000, BIG])
        if kind < 0.45:
            items.append(file(rng.choice(FILES), rng.randbytes(size)))
        elif kind < 0.55:
            items.append(entry(rng.choice(FOLDERS), tarfile.DIRTYPE, 0o755))
        elif kind < 0.65:
            items.append(file(rng.choice(FOLDERS).rstrip("/"), rng.randbytes(size)))  # a folder's name
        elif kind < 0.8:
            items.append(file(rng.choice(WHITEOUTS), rng.randbytes(rng.choice([0, 5]))))
        elif kind < 0.9:
            items.append(entry(rng.choice(FILES), tarfile.SYMTYPE, 0o777, linkname="f"))
        else:
            items.append(entry(rng.choice(FILES), tarfile.LNKTYPE, linkname=rng.choice(FILES)))
    return tar_bytes(items) + b"\0" * rng.choice([0, 512, 10240])


@pytest.mark.parametrize("seed", range(int(os.environ.get("FUZZ_SEEDS", "6"))))
def test_random_layers_with_repeated_names_rebuild_byte_for_byte(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rebuilt = kept = 0
    for i in range(60):
        layer = random_layer(rng)
        folder = tmp_path / str(i)
        (folder / "diff").mkdir(parents=True)
        recorder = tarsplit.Recorder(folder)
        try:
            layers.unpack(io.BytesIO(layer), folder / "diff", recorder)
        except ImageError:  # a path through a file, a link to a name gone: refused as without an index
            recorder.abort()
            continue
        recorder.finish()
        with tarsplit.SplitTar(folder) as split:
            split.check()
            assert split.size == len(layer)
            assert split.read() == layer, f"seed {seed}, layer {i}"
        rebuilt += 1
        kept += (folder / tarsplit.KEPT).is_dir()
    assert rebuilt >= 5 and kept >= 2, (rebuilt, kept)  # the generator exercises what it is for
