"""Issue 12, point 1 (devices), against the real agent on this host: a default container can make device nodes
(mknod is one of Docker's default capabilities) but open none of the guest's disks or kernel devices, wherever
the node comes from (its rootfs, an image built with one, a volume, a bind mount and its submounts); the
default devices, the pty, `--device` and `--privileged` still work.

Two walls: `nodev` on every filesystem the container can write to (an open fails with EACCES) and the cgroup
device program (EPERM), which this host runs through its cgroup v2 tree at /sys/fs/cgroup/unified.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent

from pymachine_agent.runtime import devices
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.spec import Limits

B = "pymachine/busybox"
DENIED = ("Operation not permitted", "Permission denied")  # the device program (EPERM) or nodev (EACCES)
HAS_FUSE = os.path.exists("/dev/fuse")
needs_fuse = pytest.mark.skipif(not HAS_FUSE, reason="this host has no /dev/fuse")


SECRET = "SECRET-ON-THE-DISK"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, str]]:
    """A disk of this "VM" that holds a secret: a loop device over a file (this sandbox refuses even root
    the raw open of its own /dev/vda, so that one would prove nothing). Yields major, minor, guest path."""
    backing = tmp_path_factory.mktemp("disk") / "disk.img"
    backing.write_bytes(SECRET.encode().ljust(1 << 20, b"\0"))
    path = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
    )
    dev = path.stdout.strip()
    try:
        rdev = os.stat(dev).st_rdev
        with open(dev, "rb") as f:  # this host itself can read it
            assert f.read(len(SECRET)).decode() == SECRET
        yield os.major(rdev), os.minor(rdev), dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _has_v2() -> bool:
    return Cgroup("probe").v2_path is not None


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(tmp_path_factory.mktemp("agent")) as a:
        a.load_busybox()
        yield a


def run(agent: Agent, *args: str) -> subprocess.CompletedProcess[str]:
    return agent.docker("run", "--rm", *args, check=False)


def assert_denied(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode != 0, f"{what} was opened: {proc.stdout!r}"
    assert any(d in proc.stderr for d in DENIED), proc.stderr


# -- the attacks ---------------------------------------------------------------------------------------------
def test_mknod_of_the_disk_succeeds_but_it_cannot_be_read(agent: Agent, disk: tuple[int, int, str]) -> None:
    major, minor, _ = disk
    proc = run(agent, B, "sh", "-c", f"mknod /s b {major} {minor} && echo made >&2; head -c 100 /s")
    assert "made" in proc.stderr  # Docker allows mknod; only opening is refused
    assert SECRET not in proc.stdout, "the container read the VM's disk"
    assert any(d in proc.stderr for d in DENIED), proc.stderr


@pytest.mark.parametrize("node", ["c 1 11", "c 10 229", "disk"], ids=["kmsg", "fuse", "disk"])
def test_kernel_devices_made_with_mknod_cannot_be_opened(
    agent: Agent, disk: tuple[int, int, str], node: str
) -> None:
    """Opened for writing only (nothing is written): /dev/kmsg then needs no capability (log injection)."""
    node = f"b {disk[0]} {disk[1]}" if node == "disk" else node
    for where in ("/n", "/tmp/n", "/dev/n", "/dev/shm/n"):  # the rootfs, its /dev tmpfs, /dev/shm
        proc = run(agent, B, "sh", "-c", f"mknod {where} {node} && exec 3>{where} && echo opened")
        assert_denied(proc, where)


def test_exec_processes_are_confined_too(agent: Agent, disk: tuple[int, int, str]) -> None:
    major, minor, _ = disk
    name = "devs-exec"
    agent.docker("run", "-d", "--name", name, B, "sleep", "300")
    try:
        proc = agent.docker(
            "exec", name, "sh", "-c", f"mknod /s b {major} {minor}; head -c 1 /s", check=False
        )
        assert_denied(proc, "the disk from an exec")
    finally:
        agent.docker("rm", "-f", name, check=False)


def test_an_image_layer_with_a_device_node_is_refused(
    agent: Agent, tmp_path: Path, disk: tuple[int, int, str]
) -> None:
    """A hostile image carrying the disk's node: the layer unpacker refuses it (stricter than Docker)."""
    major, minor, _ = disk
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as out:
        _hostile_archive(out, major, minor)
    proc = agent.docker("load", "-i", str(archive), check=False)
    assert proc.returncode != 0 and "device node" in proc.stderr + proc.stdout


def test_a_device_node_made_in_a_build_is_left_out_of_the_image(
    agent: Agent, tmp_path: Path, disk: tuple[int, int, str]
) -> None:
    """The other way a node could reach an image: a RUN step makes one; the layer keeps no device node."""
    major, minor, _ = disk
    (tmp_path / "Dockerfile").write_text(f"FROM {B}\nRUN mknod /evil b {major} {minor}\n")
    agent.docker("build", "-t", "devs-evil:1", str(tmp_path), timeout=300)
    try:
        assert run(agent, "devs-evil:1", "sh", "-c", "test -e /evil").returncode == 1
    finally:
        agent.docker("rmi", "-f", "devs-evil:1", check=False)


def test_volumes_and_bind_mounts_with_device_nodes(
    agent: Agent, tmp_path: Path, disk: tuple[int, int, str]
) -> None:
    major, minor, _ = disk
    src = tmp_path / "bind"
    (src / "sub").mkdir(parents=True)
    os.mknod(src / "disk", 0o666 | 0o060000, os.makedev(major, minor))
    # a filesystem mounted below the bind source comes along with the recursive bind, with its own flags
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        os.mknod(src / "sub" / "disk", 0o666 | 0o060000, os.makedev(major, minor))
        assert_denied(run(agent, "-v", f"{src}:/m", B, "head", "-c", "1", "/m/disk"), "a bind mount's node")
        assert_denied(run(agent, "-v", f"{src}:/m", B, "head", "-c", "1", "/m/sub/disk"), "a submount's node")
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)
    script = f"mknod /v/disk b {major} {minor} && head -c 1 /v/disk"
    assert_denied(run(agent, "-v", "devs-vol:/v", B, "sh", "-c", script), "a volume's node")
    agent.docker("volume", "rm", "-f", "devs-vol", check=False)


def test_a_chmod_inside_does_not_reach_the_guests_nodes(agent: Agent) -> None:
    """The container's /dev/full is its own node, not a bind of the guest's: root inside may chmod it."""
    before = os.stat("/dev/full").st_mode
    try:
        assert run(agent, B, "chmod", "0600", "/dev/full").returncode == 0
        assert os.stat("/dev/full").st_mode == before
    finally:
        os.chmod("/dev/full", before & 0o7777)


# -- what must keep working ----------------------------------------------------------------------------------
def test_default_devices_work(agent: Agent) -> None:
    script = (
        "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random | wc -c;"
        " echo x >/dev/null && echo null; echo x >/dev/full || echo full-refused; ls -ln /dev/null"
    )
    proc = run(agent, B, "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[:5] == ["4", "4", "4", "null", "full-refused"], proc.stdout
    assert lines[5].startswith("crw-rw-rw-") and " 0 " in lines[5], lines[5]
    assert "No space left on device" in proc.stderr


def test_a_pty_and_dev_tty_work(agent: Agent) -> None:
    proc = run(agent, "-t", B, "sh", "-c", "tty; echo via-tty >/dev/tty; test -c /dev/ptmx && echo ptmx")
    assert proc.returncode == 0, proc.stderr
    assert "/dev/pts/0" in proc.stdout and "via-tty" in proc.stdout and "ptmx" in proc.stdout


@needs_fuse
def test_device_flag_makes_a_node_that_opens(agent: Agent) -> None:
    proc = run(
        agent, "--device", "/dev/fuse", B, "sh", "-c", "test -c /dev/fuse && exec 3<>/dev/fuse && echo opened"
    )
    assert proc.returncode == 0 and "opened" in proc.stdout, proc.stderr
    proc = run(
        agent,
        "--device",
        "/dev/fuse:/dev/other",
        B,
        "sh",
        "-c",
        "test -c /dev/other && exec 3<>/dev/other && echo opened",
    )
    assert "opened" in proc.stdout, proc.stderr


@needs_fuse
@pytest.mark.skipif(not _has_v2(), reason="no cgroup v2 tree on this host: no device program")
def test_device_permissions_are_enforced_by_the_device_program(agent: Agent) -> None:
    """--device /dev/fuse:/dev/fuse:r → read only: the node is on a mount that allows devices, so only the
    device program can refuse the write open, with EPERM; a --device-cgroup-rule then adds the write."""
    readonly = ["--device", "/dev/fuse:/dev/fuse:r"]
    assert (
        "ro"
        in run(agent, *readonly, B, "sh", "-c", "test -c /dev/fuse && exec 3</dev/fuse && echo ro").stdout
    )
    proc = run(agent, *readonly, B, "sh", "-c", "exec 3<>/dev/fuse && echo rw")
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr
    proc = run(
        agent, *readonly, "--device-cgroup-rule", "c 10:229 rw", B, "sh", "-c", "exec 3<>/dev/fuse && echo rw"
    )
    assert "rw" in proc.stdout, proc.stderr


@needs_fuse
def test_privileged_gets_the_guests_devices(agent: Agent, disk: tuple[int, int, str]) -> None:
    major, minor, path = disk
    script = "test -c /dev/fuse && exec 3<>/dev/fuse && echo fuse;"  # the guest's nodes are all there
    script += f" head -c {len(SECRET)} {path}; echo; mknod /s b {major} {minor} && head -c {len(SECRET)} /s"
    proc = run(agent, "--privileged", B, "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fuse", SECRET, SECRET]


def test_bad_device_requests_are_refused(agent: Agent) -> None:
    proc = agent.docker("run", "--rm", "--device", "/dev/nope", B, "true", check=False)
    assert proc.returncode != 0 and 'custom device "/dev/nope"' in proc.stderr
    status, _, body = agent.request(
        "POST", "/containers/create", {"Image": B, "HostConfig": {"DeviceCgroupRules": ["x 1:3 rwm"]}}
    )
    assert status == 400 and b"invalid device cgroup format 'x 1:3 rwm'" in body


# -- the program itself --------------------------------------------------------------------------------------
@pytest.mark.skipif(not _has_v2(), reason="no cgroup v2 tree on this host: no device program")
def test_the_device_program_alone(tmp_path: Path, disk: tuple[int, int, str]) -> None:
    """Attached to a fresh cgroup, with nodes on a filesystem that allows devices (this host's /tmp)."""
    major, minor, _ = disk
    nodes = {"disk": ("b", major, minor), "kmsg": ("c", 1, 11), "null": ("c", 1, 3), "pts9": ("c", 136, 9)}
    for name, (kind, ma, mi) in nodes.items():
        os.mknod(tmp_path / name, 0o666 | (0o060000 if kind == "b" else 0o020000), os.makedev(ma, mi))
    cg = Cgroup("devtest-" + tmp_path.name[-20:], parent="pymachine-test")
    cg.create(Limits())
    try:
        rules = [*devices.DEFAULT_RULES, devices.parse_rule("c 1:11 r")]
        assert devices.install(str(cg.v2_path), rules)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            results = []
            cg.join(0)
            for name, flags in (("disk", os.O_RDONLY), ("kmsg", os.O_RDONLY), ("kmsg", os.O_WRONLY),
                                ("null", os.O_RDWR)):  # fmt: skip
                try:
                    os.close(os.open(tmp_path / name, flags))
                    results.append(f"{name}:ok")
                except OSError as e:
                    results.append(f"{name}:{e.errno}")
            try:
                os.mknod(tmp_path / "made", 0o600 | 0o060000, os.makedev(major, minor))
                results.append("mknod:ok")
            except OSError as e:
                results.append(f"mknod:{e.errno}")
            os.write(w, " ".join(results).encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        got = os.read(r, 4096).decode().split()
        os.close(r)
        assert got == ["disk:1", "kmsg:ok", "kmsg:1", "null:ok", "mknod:ok"]
    finally:
        cg.remove()
        if cg.v2_path is not None:
            with contextlib.suppress(OSError):  # another run of this test may still use it
                cg.v2_path.parent.rmdir()


def _hostile_archive(out: tarfile.TarFile, major: int, minor: int) -> None:
    """A docker-archive whose one layer holds a block device node."""
    import hashlib
    import io
    import json

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("evil")
        info.type, info.devmajor, info.devminor, info.mode = tarfile.BLKTYPE, major, minor, 0o666
        t.addfile(info)
    data = layer.getvalue()
    diff = hashlib.sha256(data).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/evil"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]}}).encode()  # fmt: skip
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": cfg_name, "RepoTags": ["devs-hostile:1"], "Layers": [f"{diff}/layer.tar"]}]
    )
    for name, blob in ((cfg_name, config), (f"{diff}/layer.tar", data), ("manifest.json", manifest.encode())):
        info = tarfile.TarInfo(name)
        info.size = len(blob)
        out.addfile(info, io.BytesIO(blob))
