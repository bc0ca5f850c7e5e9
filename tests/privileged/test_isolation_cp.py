"""Issue 12 point 4: `docker cp`, `docker export` and `docker commit` against a hostile container.

- an image whose /etc/nsswitch.conf names a `libnss_evil.so.2` it ships: copying from (and to) a merely
  created container, or exporting it, must not load that library into the engine (CVE-2019-14271's class:
  the library's constructor climbs out of any chroot and writes a marker file on this host);
- a running container that keeps swapping a directory for a symlink to a folder of this host while `docker
  commit` and `docker cp` run: nothing of that folder ever reaches the committed image or the tar;
- `docker commit` pauses a running container by default and `pause=false` keeps it running;
- a 1 GiB file copies out of and into a container with the agent's peak RSS far below the file size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, UnixHTTPConnection, _add, _busybox_layer, running_agent

B = "pymachine/busybox"
EVIL = "pymachine-test/nss-evil:1"
LIBDIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib", "lib64", "usr/lib64")
EVIL_C = r"""
#include <fcntl.h>
#include <unistd.h>
/* Runs when glibc's NSS dlopen()s this module. Root with CAP_SYS_CHROOT climbs out of any chroot
   (chroot into a subdir leaves the cwd outside the new root, so ".." walks up to the real one). */
__attribute__((constructor)) static void pwn(void) {
    chroot("/etc");
    for (int i = 0; i < 64; i++) chdir("..");
    chroot(".");
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { write(fd, "pwned\n", 6); close(fd); }
}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(Path(tmp_path_factory.mktemp("agent"))) as a:
        a.load_busybox()
        yield a


def _image_archive(path: Path, ref: str, layers: list[bytes]) -> None:
    """A docker-archive (what `docker save` writes) of `layers`, tagged `ref`."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    names = [d.split(":")[1] + "/layer.tar" for d in diff_ids]
    with tarfile.open(path, "w") as tar:
        _add(tar, cfg_name, cfg)
        for name, layer in zip(names, layers, strict=True):
            _add(tar, name, layer)
        _add(
            tar,
            "manifest.json",
            json.dumps([{"Config": cfg_name, "RepoTags": [ref], "Layers": names}]).encode(),
        )


def _evil_layer(so: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for d in LIBDIRS:
            parts = d.split("/")
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in made:
                    _add(tar, sub, mode=0o755, kind=tarfile.DIRTYPE)
                    made.add(sub)
            _add(tar, f"{d}/libnss_evil.so.2", so, 0o755)
        _add(tar, "etc/nsswitch.conf", b"passwd: evil\ngroup: evil\nshadow: evil\nhosts: evil\n")
        # a name look-up would be attempted for any owner; an unusual one makes sure no cache answers it
        info = tarfile.TarInfo("etc/owned-by-4242")
        info.uid = info.gid = 4242
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buf.getvalue()


@pytest.fixture(scope="module")
def evil(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Loads EVIL into the agent; yields the marker path its NSS module would write on this host."""
    work = tmp_path_factory.mktemp("evil")
    marker = Path(f"/tmp/pymachine-nss-pwned-{secrets.token_hex(6)}")
    (work / "evil.c").write_text(EVIL_C)
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O2",
            f'-DMARKER="{marker}"',
            "-o",
            str(work / "evil.so"),
            str(work / "evil.c"),
        ],
        check=True,
        capture_output=True,
    )
    archive = work / "evil.tar"
    _image_archive(archive, EVIL, [_busybox_layer(), _evil_layer((work / "evil.so").read_bytes())])
    agent.docker("load", "-i", str(archive))
    try:
        yield marker
    finally:
        marker.unlink(missing_ok=True)
        agent.docker("rmi", "-f", EVIL, check=False)


def _created(agent: Agent, name: str) -> str:
    agent.docker("rm", "-f", name, check=False)
    return agent.docker("create", "--name", name, EVIL).stdout.strip()


def test_cp_out_of_a_created_container_runs_no_code_of_the_image(
    agent: Agent, evil: Path, tmp_path: Path
) -> None:
    _created(agent, "nss-out")
    try:
        agent.docker("cp", "nss-out:/etc", str(tmp_path / "out"))
        assert not evil.exists(), "the image's NSS module ran on this host during docker cp"
        # the legitimate copy happened (of the container's /etc, not the host's), with numeric owners
        assert (tmp_path / "out" / "nsswitch.conf").read_text().startswith("passwd: evil")
        status, _, body = agent.request("GET", "/containers/nss-out/archive?path=/etc/owned-by-4242")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            owned = tar.getmember("owned-by-4242")
        assert (owned.uid, owned.gid, owned.uname, owned.gname) == (4242, 4242, "", "")
        assert not evil.exists()
    finally:
        agent.docker("rm", "-f", "nss-out", check=False)


def test_export_runs_no_code_of_the_image(agent: Agent, evil: Path, tmp_path: Path) -> None:
    _created(agent, "nss-export")
    try:
        agent.docker("export", "-o", str(tmp_path / "fs.tar"), "nss-export")
        assert not evil.exists(), "the image's NSS module ran on this host during docker export"
        with tarfile.open(tmp_path / "fs.tar") as tar:
            owned = tar.getmember("etc/owned-by-4242")
            assert (owned.uid, owned.uname) == (4242, "")  # numeric only, as moby's FileInfoHeaderNoLookups
            assert tar.getmember("lib/x86_64-linux-gnu/libnss_evil.so.2").isreg()
    finally:
        agent.docker("rm", "-f", "nss-export", check=False)


def test_cp_into_a_created_container_runs_no_code_of_the_image(
    agent: Agent, evil: Path, tmp_path: Path
) -> None:
    _created(agent, "nss-in")
    try:
        src = tmp_path / "in.txt"
        src.write_text("from the host\n")
        agent.docker("cp", str(src), "nss-in:/etc/in.txt")
        agent.docker("cp", "nss-in:/etc/in.txt", str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "from the host\n"
        assert not evil.exists(), "the image's NSS module ran on this host during docker cp into it"
    finally:
        agent.docker("rm", "-f", "nss-in", check=False)


# -- a container that swaps a directory for a symlink out of itself -----------------------------------


SWAPPER = (
    "mkdir -p /w/d && echo inside > /w/d/f && cd /w && seq 1500 | xargs touch && "
    "while :; do mv /w/d /w/d.x; ln -s {target} /w/d; rm /w/d; mv /w/d.x /w/d; done"
)


@pytest.fixture
def swapper(agent: Agent, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running container swapping /w/d for a symlink to a folder of this host holding a secret file.
    Yields (container id, the secret file's name)."""
    host_dir = tmp_path / "host-secret"  # same filesystem as the agent's state: a hard link could reach it
    host_dir.mkdir()
    secret = f"secret-{secrets.token_hex(6)}"
    (host_dir / secret).write_text("a file of the guest\n")
    cid = agent.docker("run", "-d", B, "sh", "-c", SWAPPER.format(target=host_dir)).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while agent.docker("exec", cid, "test", "-e", "/w/1500", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the swapper did not start"
            time.sleep(0.2)
        yield cid, secret
    finally:
        agent.docker("rm", "-f", cid, check=False)


def _leaked_into_store(agent: Agent, secret: str) -> list[str]:
    images = agent.state_dir / "images"
    return [os.path.join(d, n) for d, _, files in os.walk(images) for n in files if n == secret]


@pytest.mark.parametrize("pause", [False, True], ids=["pause-false", "pause-default"])
def test_commit_of_a_container_swapping_a_dir_for_a_symlink_gets_no_guest_file(
    agent: Agent, swapper: tuple[str, str], pause: bool
) -> None:
    cid, secret = swapper
    client = agent.client()
    made = []
    try:
        for i in range(25 if not pause else 5):
            query = f"container={cid}&repo=swapcommit&tag={i}" + ("" if pause else "&pause=0")
            status, _, body = agent.request("POST", f"/commit?{query}", body={})
            assert status == 201, body  # every commit succeeds: entries that move are taken as they are now
            made.append(f"swapcommit:{i}")
            assert not _leaked_into_store(agent, secret), f"commit {i} put a guest file into the image"
        layer_names = set()
        for ref in made:
            img = client.images.get(ref)
            layer_names.add(img.attrs["RootFS"]["Layers"][-1])
        assert layer_names  # (the images are real)
    finally:
        for ref in made:
            agent.docker("rmi", ref, check=False)


def test_cp_of_a_container_swapping_a_dir_for_a_symlink_stays_inside_it(
    agent: Agent, swapper: tuple[str, str], tmp_path: Path
) -> None:
    cid, secret = swapper
    for i in range(15):
        status, _, body = agent.request("GET", f"/containers/{cid}/archive?path=/w", timeout=120)
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            names = tar.getnames()
        assert not [n for n in names if secret in n], f"copy {i} carried a guest file"
        assert "w/1500" in names
    # writes: each upload lands inside the container, never in the folder the symlink names
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        _add(tar, "d/planted", b"x\n")
    host_dir = tmp_path / "host-secret"
    landed = 0
    for _ in range(15):
        status, _, body = agent.request("PUT", f"/containers/{cid}/archive?path=/w", body=payload.getvalue())
        # (an upload may fail when /w/d vanishes under it, as Docker's would: the container is hostile)
        assert status in (200, 500), body
        landed += status == 200
        assert sorted(os.listdir(host_dir)) == [secret], "an upload was written through the symlink"
    assert landed, "no upload succeeded"


# -- commit pauses by default --------------------------------------------------------------------------


def _events(agent: Agent, cid: str, since: float, until: float) -> list[str]:
    q = urllib.parse.quote(json.dumps({"container": [cid]}))
    status, _, body = agent.request("GET", f"/events?since={since:.3f}&until={until:.3f}&filters={q}")
    assert status == 200
    return [json.loads(line)["Action"] for line in body.splitlines() if line.strip()]


def test_commit_pauses_a_running_container_unless_pause_false(agent: Agent) -> None:
    cid = agent.docker("run", "-d", B, "sleep", "600").stdout.strip()
    try:
        t0 = time.time() - 1
        status, _, body = agent.request("POST", f"/commit?container={cid}&repo=paused-commit", body={})
        assert status == 201, body
        t1 = time.time() + 1
        actions = _events(agent, cid, t0, t1)
        assert actions.index("pause") < actions.index("commit") < actions.index("unpause"), actions
        assert agent.client().containers.get(cid).attrs["State"]["Paused"] is False

        t2 = time.time()
        status, _, body = agent.request(
            "POST", f"/commit?container={cid}&repo=paused-commit&pause=0", body={}
        )
        assert status == 201, body
        actions = _events(agent, cid, t2, time.time() + 1)
        assert "commit" in actions and "pause" not in actions, actions

        # a container the user paused stays paused after a commit
        agent.docker("pause", cid)
        status, _, body = agent.request("POST", f"/commit?container={cid}&repo=paused-commit", body={})
        assert status == 201, body
        assert agent.client().containers.get(cid).attrs["State"]["Paused"] is True
        agent.docker("unpause", cid)
    finally:
        agent.docker("rm", "-f", cid, check=False)
        agent.docker("rmi", "paused-commit", check=False)


# -- bounded memory ------------------------------------------------------------------------------------

GIB = 1 << 30
PEAK_LIMIT = 200 << 20


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS


def _one_file_tar(name: str, size: int) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    yield info.tobuf(tarfile.PAX_FORMAT)
    chunk = b"\0" * (1 << 20)
    left = size
    while left:
        n = min(left, len(chunk))
        yield chunk[:n]
        left -= n
    yield b"\0" * ((-size) % 512) + b"\0" * 1024


def test_a_1gib_file_copies_out_and_in_with_bounded_memory(agent: Agent) -> None:
    cid = agent.docker(
        "run", "-d", B, "sh", "-c", "dd if=/dev/zero of=/big bs=1M seek=1023 count=1 2>/dev/null; sleep 600"
    ).stdout.strip()
    pid = agent.proc.pid
    try:
        deadline = time.monotonic() + 60
        while agent.docker("exec", cid, "stat", "-c", "%s", "/big", check=False).stdout.strip() != str(GIB):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        peaks = {}
        for what, path in (
            ("cp out", f"/containers/{cid}/archive?path=/big"),
            ("export", f"/containers/{cid}/export"),
        ):
            _reset_hwm(pid)
            conn = UnixHTTPConnection(str(agent.socket_path), timeout=300)
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            total = 0
            while piece := resp.read(1 << 20):
                total += len(piece)
            conn.close()
            assert total > GIB
            peaks[what] = _hwm(pid)

        _reset_hwm(pid)
        conn = UnixHTTPConnection(str(agent.socket_path), timeout=300)
        conn.request(
            "PUT",
            f"/containers/{cid}/archive?path=/tmp",
            body=_one_file_tar("up.bin", GIB),
            headers={"Content-Type": "application/x-tar"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        peaks["cp in"] = _hwm(pid)
        assert agent.docker("exec", cid, "stat", "-c", "%s", "/tmp/up.bin").stdout.strip() == str(GIB)
        print("agent peak RSS (MiB):", {k: v >> 20 for k, v in peaks.items()})
        assert all(v < PEAK_LIMIT for v in peaks.values()), peaks
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_a_stopped_containers_filesystem_is_mounted_nowhere_the_guest_sees(
    agent: Agent, tmp_path: Path
) -> None:
    """The overlay a cp of a stopped container reads is private: no mount of it appears in the agent's
    mount table, neither while copies come and go (the old code mounted it on /tmp/pm-cp-*) nor while a
    copy is held half-read (the mount must then be alive, somewhere no one else sees)."""
    cid = agent.docker("create", B, "true").stdout.strip()
    mounts = Path(f"/proc/{agent.proc.pid}/mounts")
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.extend(line for line in mounts.read_text().splitlines() if cid in line)
            time.sleep(0.001)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(10):
            agent.docker("cp", f"{cid}:/bin", str(tmp_path / f"bin{i}"))
        assert (tmp_path / "bin0" / "busybox").stat().st_size > 0
        conn = UnixHTTPConnection(str(agent.socket_path), timeout=60)
        conn.request("GET", f"/containers/{cid}/archive?path=/bin")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read(512)  # the agent now waits on the socket, mid-stream
        held = [line for line in mounts.read_text().splitlines() if cid in line]
        total = 512 + len(resp.read())
        conn.close()
        assert total > 1 << 20 and not held, held
        # a client that leaves mid-stream: the detached mount's fd (and every other) is released
        fds = Path(f"/proc/{agent.proc.pid}/fd")
        before = len(os.listdir(fds))
        for _ in range(5):
            conn = UnixHTTPConnection(str(agent.socket_path), timeout=60)
            conn.request("GET", f"/containers/{cid}/archive?path=/bin")
            assert conn.getresponse().read(512)
            conn.close()
        deadline = time.monotonic() + 30
        while len(os.listdir(fds)) > before:
            assert time.monotonic() < deadline, sorted(os.readlink(fds / n) for n in os.listdir(fds))
            time.sleep(0.1)
    finally:
        stop.set()
        t.join()
        agent.docker("rm", "-f", cid, check=False)
    assert not seen, seen
