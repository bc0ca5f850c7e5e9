"""`docker load` streams (images/staging.py): the agent unpacks layers while the upload arrives and commits
nothing before the whole archive checked out. Through the real agent's API: a hostile or corrupt layer after
a good one, an upload cut short (the client gone, or a complete body holding a cut tar) leave no image, no
layer, no blob and no staging folder behind; a large image loads and saves back byte for byte (save streams,
its blobs by sendfile).

On main's spooling loader the hostile and mismatched-layer cases fail: it committed each layer as it went, so
the good layer before the bad one stayed in layers/ (an orphan until `prune`). An upload cut short left
nothing there either (its tar reader failed before the first layer); only the message is new.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, start_agent
from support.registry import docker_archive, entry, file, image_config, tar_bytes

GOOD = tar_bytes([entry("srv/", tarfile.DIRTYPE, 0o755), file("srv/fine", b"ok" * 5000)])


def good(seed: str) -> bytes:
    """A harmless layer no earlier test loaded (one already in the store would hide a leftover)."""
    return tar_bytes([entry("srv/", tarfile.DIRTYPE, 0o755), file("srv/fine", seed.encode() * 5000)])


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(Path(tmp_path_factory.mktemp("agent")))
    try:
        yield a
    finally:
        a.stop()


def store_files(agent: Agent) -> dict[str, set[str]]:
    """What the image store holds: layers, blobs, image records, and folders under tmp/ (staging)."""
    root = agent.state_dir / "images"
    found = {}
    for sub in ("layers", "blobs/sha256", "images", "tmp"):
        folder = root / sub
        found[sub] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    found["tmp"] -= {"spool"}  # the one stable folder other uploads spool through
    return found


def wait_unchanged(agent: Agent, before: dict[str, set[str]]) -> None:
    """The store as before, polled (a handler whose client left may still be cleaning up)."""
    deadline = time.monotonic() + 30
    while (now := store_files(agent)) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert now == before, f"left behind: { {k: now[k] - before[k] for k in now if now[k] != before[k]} }"


def load(agent: Agent, archive: bytes, tmp_path: Path) -> str:
    path = tmp_path / "upload.tar"
    path.write_bytes(archive)
    proc = agent.docker("load", "-i", str(path), check=False)
    assert proc.returncode != 0, proc
    return proc.stdout + proc.stderr


HOSTILE = {
    "an absolute path": (tar_bytes([file("/abs", b"x")]), "absolute path"),
    "a path out through '..'": (tar_bytes([file("srv/../../escape", b"x")]), "'..' in path"),
    "a hardlink to a file outside the layer": (
        tar_bytes([entry("passwd", tarfile.LNKTYPE, linkname="etc/passwd")]),
        "'etc' does not exist",  # the link target is looked up inside the layer only
    ),
    "a file through a symlink it planted": (
        tar_bytes([entry("up", tarfile.SYMTYPE, 0o777, linkname="/"), file("up/tmp/pwned", b"x")]),
        "symlink",
    ),
    "a device node": (tar_bytes([entry("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)]), "device node"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_layer_after_a_good_one_leaves_nothing(agent: Agent, tmp_path: Path, kind: str) -> None:
    hostile, refusal = HOSTILE[kind]
    before = store_files(agent)
    out = load(agent, docker_archive([good(kind), hostile], ["hostile:1"]), tmp_path)
    assert refusal in out, out
    assert agent.docker("image", "inspect", "hostile:1", check=False).returncode != 0
    wait_unchanged(agent, before)
    assert not Path("/escape").exists() and not Path("/tmp/pwned").exists()


def test_a_layer_that_is_not_what_the_config_says_leaves_nothing(agent: Agent, tmp_path: Path) -> None:
    before = store_files(agent)
    other = tar_bytes([file("srv/other", b"y")])
    config = image_config([GOOD, other])  # the archive then carries a third layer in other's place
    out = load(
        agent, docker_archive([GOOD, tar_bytes([file("srv/swapped", b"z")])], ["swap:1"], config), tmp_path
    )
    assert "digest" in out.lower(), out
    wait_unchanged(agent, before)


def cut_archive() -> tuple[bytes, int]:
    """A docker-archive with manifest.json first (so a loader could know its layers early) and a large second
    layer, and the offset halfway through that layer's data."""
    big = tar_bytes([file("srv/big", os.urandom(4 << 20))])
    layers = [good("cut"), big]
    config = image_config(layers)
    cfg = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": cfg, "RepoTags": ["cut:1"], "Layers": ["a/layer.tar", "b/layer.tar"]}]
    items = [file("manifest.json", json.dumps(manifest).encode()), file(cfg, config)]
    items += [file("a/layer.tar", layers[0]), file("b/layer.tar", big)]
    archive = tar_bytes(items)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmember("b/layer.tar")
    return archive, member.offset_data + member.size // 2


def test_a_complete_body_holding_a_cut_archive_leaves_nothing(agent: Agent) -> None:
    before = store_files(agent)
    archive, cut = cut_archive()
    status, _, body = agent.request(
        "POST", "/v1.44/images/load", body=archive[:cut], headers={"Content-Type": "application/x-tar"}
    )
    assert status == 400, (status, body)
    assert "cut short" in json.loads(body)["message"], body
    wait_unchanged(agent, before)


def test_a_client_gone_in_the_middle_of_the_upload_leaves_nothing(agent: Agent) -> None:
    before = store_files(agent)
    archive, cut = cut_archive()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(str(agent.socket_path))
    s.sendall(
        b"POST /v1.44/images/load HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for start in range(0, cut, 1 << 16):  # as the CLI sends it: chunked, in pieces
        piece = archive[start : min(cut, start + (1 << 16))]
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    s.close()  # the client dies: no last chunk
    wait_unchanged(agent, before)
    assert agent.docker("image", "inspect", "cut:1", check=False).returncode != 0


def test_a_large_image_loads_and_saves_back_byte_for_byte(agent: Agent, tmp_path: Path) -> None:
    payload = os.urandom(48 << 20)
    layer = tar_bytes(
        [entry("data/", tarfile.DIRTYPE, 0o755), file("data/blob", payload), file("data/x", b"1")]
    )
    archive = tmp_path / "big.tar"
    archive.write_bytes(docker_archive([GOOD, layer], ["large:1"]))
    assert "Loaded image: large:1" in agent.docker("load", "-i", str(archive), timeout=300).stdout
    lower = agent.docker("image", "inspect", "large:1", "-f", "{{.GraphDriver.Data.LowerDir}}").stdout
    data = Path(lower.strip().split(":")[0]) / "data" / "blob"  # the top layer comes first
    assert data.stat().st_size == len(payload)
    assert hashlib.sha256(data.read_bytes()).digest() == hashlib.sha256(payload).digest()
    saved = tmp_path / "saved.tar"
    agent.docker("save", "-o", str(saved), "large:1", timeout=300)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = [tar.extractfile(name).read() for name in manifest[0]["Layers"]]  # type: ignore[union-attr]
    assert layers == [GOOD, layer]  # the layer tars as loaded, so the image ID and diff_ids survive
    agent.docker("rmi", "large:1")


def test_the_reply_waits_for_the_whole_body_and_the_connection_stays_usable(agent: Agent) -> None:
    """The tar's end marker is not the body's end: the record padding after it and the last chunk must be read
    before the reply, or they are parsed as the next request (`docker load` through the fast path got
    'write: broken pipe', Go logged an unsolicited 400 "malformed request line b'0'")."""
    archive = docker_archive([good("keepalive")], ["keepalive:1"]) + b"\0" * 20480  # extra padding after it
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(str(agent.socket_path))
    f = s.makefile("rb")
    s.sendall(b"POST /v1.44/images/load?quiet=1 HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(archive), 4096):
        piece = archive[start : start + 4096]
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    s.sendall(b"0\r\n\r\n")
    assert f.readline().split()[1] == b"200"
    while f.readline() not in (b"\r\n", b""):
        pass
    body = b""
    while (size := int(f.readline().strip(), 16)) > 0:
        body += f.read(size + 2)[:-2]
    f.readline()
    assert b"Loaded image: keepalive:1" in body, body
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")  # the same connection: the next request parses
    assert f.readline().split()[1] == b"200"
    s.close()
    agent.docker("rmi", "keepalive:1")
