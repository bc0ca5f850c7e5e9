"""Guest image recipe hashing, manifest round trip, cache lookup and the initrd writer (no building)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from pymachine.hostvm import image, image_initrd
from pymachine.images import GUEST_RECIPE
from pymachine_agent import protocol


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    copy = tmp_path / "guest"
    shutil.copytree(GUEST_RECIPE, copy)
    return copy


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    copy = tmp_path / "pymachine_agent"
    shutil.copytree(Path(protocol.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_recipe_hash_is_stable_and_matches_a_copy(recipe: Path, agent: Path) -> None:
    first = image.recipe_hash(recipe, agent)
    assert first == image.recipe_hash(recipe, agent)
    assert len(first) == 64 and int(first, 16) >= 0
    assert image.rootfs_hash(recipe) == image.rootfs_hash(GUEST_RECIPE)


def test_overlay_change_rebuilds_the_disk_but_not_the_rootfs(recipe: Path, agent: Path) -> None:
    before, rootfs_before = image.recipe_hash(recipe, agent), image.rootfs_hash(recipe)
    init = recipe / "overlay/sbin/pymachine-init"
    init.write_text(init.read_text() + "\n# changed\n")
    assert image.recipe_hash(recipe, agent) != before
    assert image.rootfs_hash(recipe) == rootfs_before


def test_package_list_change_rebuilds_both_stages(recipe: Path, agent: Path) -> None:
    before, rootfs_before = image.recipe_hash(recipe, agent), image.rootfs_hash(recipe)
    with open(recipe / "base/packages.txt", "a") as fh:
        fh.write("curl\n")
    assert image.rootfs_hash(recipe) != rootfs_before
    assert image.recipe_hash(recipe, agent) != before


def test_executable_bit_is_part_of_the_recipe(recipe: Path, agent: Path) -> None:
    before = image.recipe_hash(recipe, agent)
    (recipe / "overlay/sbin/pymachine-poweroff").chmod(0o644)
    assert image.recipe_hash(recipe, agent) != before


def test_agent_change_changes_the_hash(recipe: Path, agent: Path) -> None:
    before = image.recipe_hash(recipe, agent)
    (agent / "extra_module.py").write_text("X = 1\n")
    assert image.recipe_hash(recipe, agent) != before
    (agent / "extra_module.py").unlink()
    assert image.recipe_hash(recipe, agent) == before
    (agent / "__pycache__").mkdir(exist_ok=True)
    (agent / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    assert image.recipe_hash(recipe, agent) == before


def _manifest(folder: Path) -> image.ImageManifest:
    return image.ImageManifest(
        kernel=folder / "vmlinuz",
        initrd=folder / "initrd.img",
        disk=folder / "disk.qcow2",
        recipe_hash=folder.name,
        disk_bytes=123,
        virtual_bytes=2 << 30,
        cmdline="console=ttyS0 root=/dev/vda rw init=/sbin/pymachine-init",
        agent_checksum="ab" * 32,
        kernel_version="6.1.0-test",
    )


def test_manifest_json_has_the_contract_keys_and_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / ("c" * 64)
    folder.mkdir()
    manifest = _manifest(folder)
    data = manifest.to_json()
    for key in ("disk", "kernel", "initrd", "recipe_hash", "disk_bytes", "virtual_bytes", "cmdline",
                "agent_checksum"):  # fmt: skip
        assert key in data
    assert data["disk"] == str(folder / "disk.qcow2")
    json.dumps(data)  # serialisable as is
    manifest.save()
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored["disk"] == "disk.qcow2"  # relative on disk, so a cache folder can move
    moved = tmp_path / "moved" / folder.name
    shutil.copytree(folder, moved)
    loaded = image.ImageManifest.load(moved)
    assert loaded.disk == moved / "disk.qcow2"
    assert loaded.cmdline == manifest.cmdline and loaded.disk_bytes == 123


def test_inspect_finds_only_the_current_recipe(pymachine_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = pymachine_home / "cache"
    monkeypatch.setenv("PYMACHINE_CACHE", str(cache))
    current = image.recipe_hash()
    stale = cache / "images" / ("0" * 64)
    stale.mkdir(parents=True)
    _manifest(stale).save()
    assert image.inspect_image() is None
    folder = cache / "images" / current
    folder.mkdir(parents=True)
    _manifest(folder).save()
    found = image.inspect_image()
    assert found is not None and found.recipe_hash == current


def test_ensure_image_returns_the_cached_image_without_building(
    pymachine_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_CACHE", str(pymachine_home / "cache"))
    folder = pymachine_home / "cache" / "images" / image.recipe_hash()
    folder.mkdir(parents=True)
    _manifest(folder).save()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached image must not be rebuilt")

    from pymachine.hostvm import image_build

    monkeypatch.setattr(image_build, "build", no_build)
    assert image.ensure_image().disk == folder / "disk.qcow2"


def _fake_modules(root: Path) -> Path:
    mods = root / "usr/lib/modules/6.1.0-test"
    (mods / "kernel/drivers/virtio").mkdir(parents=True)
    (mods / "kernel/drivers/block").mkdir(parents=True)
    for name in ("virtio", "virtio_ring", "virtio_pci", "virtio-pci-modern-dev"):
        (mods / f"kernel/drivers/virtio/{name}.ko").write_bytes(name.encode())
    (mods / "kernel/drivers/block/virtio_blk.ko").write_bytes(b"blk")
    (mods / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/virtio/virtio-pci-modern-dev.ko:\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio-pci-modern-dev.ko "
        "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko "
        "kernel/drivers/virtio/virtio_ring.ko\n"
    )
    (mods / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return mods


def test_module_dependencies_load_first_and_once(tmp_path: Path) -> None:
    mods = _fake_modules(tmp_path)
    order = image_initrd.resolve_modules(mods, ["virtio_pci", "virtio_blk", "ext4"])
    names = [p.rsplit("/", 1)[-1] for p in order]
    assert names == [
        "virtio-pci-modern-dev.ko",
        "virtio.ko",
        "virtio_ring.ko",
        "virtio_pci.ko",
        "virtio_blk.ko",
    ]


def test_unknown_module_is_a_clear_error(tmp_path: Path) -> None:
    from pymachine.hostvm.errors import PymachineError

    with pytest.raises(PymachineError, match="no module 'virtio_gpu'"):
        image_initrd.resolve_modules(_fake_modules(tmp_path), ["virtio_gpu"])


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    entries, offset = {}, 0
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body : body + size])
        offset = body + size + (-size % 4)


def test_initrd_is_a_reproducible_newc_cpio(tmp_path: Path) -> None:
    _fake_modules(tmp_path)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/busybox").write_bytes(b"\x7fELF busybox")
    recipe = tmp_path / "initrd"
    recipe.mkdir()
    (recipe / "init").write_text("#!/bin/busybox sh\n")
    (recipe / "modules.txt").write_text("# comment\nvirtio_blk\n")
    out1, out2 = tmp_path / "a.img", tmp_path / "b.img"
    image_initrd.build_initrd(tmp_path, "6.1.0-test", recipe, out1)
    image_initrd.build_initrd(tmp_path, "6.1.0-test", recipe, out2)
    assert out1.read_bytes() == out2.read_bytes()
    entries = _parse_newc(gzip.decompress(out1.read_bytes()))
    assert entries["init"] == (0o100755, b"#!/bin/busybox sh\n")
    assert entries["bin/busybox"][0] == 0o100755
    assert entries["dev/console"][0] == 0o020600  # the kernel opens it before /init runs
    base = "lib/modules/6.1.0-test"
    order = entries["modules.order"][1].decode().split()
    assert order == [f"/{base}/virtio.ko", f"/{base}/virtio_ring.ko", f"/{base}/virtio_blk.ko"]
    assert all(path[1:] in entries for path in order)
    assert entries["modules.wanted"][1] == b"virtio_blk\n"
    # A flat modules.dep that busybox modprobe resolves: dependencies by file name.
    dep = entries[f"{base}/modules.dep"][1].decode().splitlines()
    assert dep == ["virtio.ko:", "virtio_ring.ko:", "virtio_blk.ko: virtio.ko virtio_ring.ko"]
    for parent in ("lib", "lib/modules", base):  # the kernel's unpacker does not create parents
        assert entries[parent][0] == 0o040755


def test_shipped_recipe_is_complete() -> None:
    for rel in ("base/packages.txt", "base/sources.list", "base/customize.sh", "initrd/init",
                "initrd/modules.txt", "overlay/sbin/pymachine-init", "overlay/sbin/pymachine-poweroff",
                "overlay/etc/ssh/sshd_config"):  # fmt: skip
        assert (GUEST_RECIPE / rel).is_file(), rel
    packages = (GUEST_RECIPE / "base/packages.txt").read_text().split()
    for needed in (
        "python3",
        "openssh-server",
        "iproute2",
        "nftables",
        "linux-image-cloud-amd64",
        "busybox-static",
    ):
        assert needed in packages
    sshd = (GUEST_RECIPE / "overlay/etc/ssh/sshd_config").read_text()
    assert "PasswordAuthentication no" in sshd and "HostKey /etc/ssh/ssh_host_ed25519_key" in sshd


def _pminit():  # type: ignore[no-untyped-def]
    import importlib.util

    path = GUEST_RECIPE / "overlay/usr/lib/pymachine/pminit.py"
    spec = importlib.util.spec_from_file_location("pminit", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_guest_init_reads_the_seed_tar_without_tarfile(fmt: int) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in (("hostname", b"box\n"), ("./authorized_keys", b"ssh-ed25519 AAAA x\n"),
                           ("agent.json", b"{}"), ("big", bytes(range(256)) * 9)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        nested = tarfile.TarInfo("sub/evil")
        nested.size = 1
        tar.addfile(nested, io.BytesIO(b"x"))
        link = tarfile.TarInfo("ssh_host_ed25519_key")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    buffer.write(bytes(8192))  # the seed disk may be longer than the archive
    buffer.seek(0)
    files = dict(_pminit().read_flat_tar(buffer))
    assert files == {
        "hostname": b"box\n",
        "authorized_keys": b"ssh-ed25519 AAAA x\n",
        "agent.json": b"{}",
        "big": bytes(range(256)) * 9,
    }


def test_prune_keeps_current_used_and_recent_images(
    pymachine_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess

    monkeypatch.setenv("PYMACHINE_CACHE", str(pymachine_home / "cache"))
    images = pymachine_home / "cache" / "images"
    current, used, old, recent = (images / h for h in (image.recipe_hash(), "1" * 64, "2" * 64, "3" * 64))
    for folder in (current, used, old, recent):
        folder.mkdir(parents=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "disk.qcow2"), "64M"], check=True
        )
    for folder in (current, used, old):
        os.utime(folder, (0, 0))  # built long ago
    machine = pymachine_home / "m" / "box"
    machine.mkdir(parents=True)
    overlay = machine / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(used / "disk.qcow2"),
                    str(overlay)], check=True)  # fmt: skip
    assert image.qcow2_backing_file(overlay) == str(used / "disk.qcow2")
    assert image.qcow2_backing_file(used / "disk.qcow2") is None
    assert image.prune_images() == [old]
    assert current.exists() and used.exists() and recent.exists() and not old.exists()
    assert image.prune_images(min_age_seconds=0) == [recent]


def test_guest_init_notes_an_agent_exit_on_a_full_disk_without_failing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The agent's exit note goes to its log on the guest disk; a full disk (/dev/full: ENOSPC at the write)
    must not raise out of the supervisor, whose restart began the boot's steps over (issue 16)."""
    pminit = _pminit()
    monkeypatch.setattr(pminit, "AGENT_LOG", "/dev/full")
    agent = pminit.Agent()
    agent.exited(0)
    assert agent.due() is not None and agent.pid == 0  # the restart is scheduled
    assert "agent exited (status 0)" in capfd.readouterr().out


def test_guest_init_gives_openssl_its_integer_code_under_tcg_only(tmp_path: Path) -> None:
    pminit = _pminit()
    tcg = "vendor_id\t: AuthenticAMD\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t: avx2\n"
    kvm = "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t: avx2\n"
    assert pminit.under_tcg(tcg) and not pminit.under_tcg(kvm) and not pminit.under_tcg("")
    assert not pminit.under_tcg("flags\t: QEMU TCG CPU\n")  # only the model name says it
    (tmp_path / "kvm").write_text(kvm)
    (tmp_path / "tcg").write_text(tcg)
    pminit.tool_env(str(tmp_path / "missing"))
    pminit.tool_env(str(tmp_path / "kvm"))
    assert "OPENSSL_ia32cap" not in pminit.TOOL_ENV and "OPENSSL_ia32cap" not in pminit.Agent().env
    pminit.tool_env(str(tmp_path / "tcg"))
    assert pminit.TOOL_ENV["OPENSSL_ia32cap"] == pminit.OPENSSL_TCG_MASK
    agent_env = pminit.Agent().env  # sshd gets TOOL_ENV itself (run), the agent this
    assert agent_env["OPENSSL_ia32cap"] == pminit.OPENSSL_TCG_MASK
    assert agent_env["PYTHONPATH"] == pminit.AGENT_DIR


def test_guest_init_loads_the_share_modules_early_and_mounts_after_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shares' modprobe is spawned as soon as the seed is read (it runs beside the identity, network and
    sshd steps); the shares step waits for it once and says so when it failed."""
    import os

    pminit = _pminit()
    mounts = [
        {"path": "/a", "tag": "pm0", "transport": "virtiofs"},
        {"path": "/b", "tag": "pm1", "transport": "9p"},
        {"path": "/c", "tag": "", "transport": "sshfs"},  # the host agent's to mount
    ]
    monkeypatch.setattr(pminit, "_seed_file", lambda name: json.dumps(mounts).encode())
    spawned: list[list[str]] = []

    def spawn(argv: list[str], log_path: str | None = None, env: object = None) -> int:
        spawned.append(argv)
        return os.posix_spawn("/bin/sh", ["sh", "-c", "exit 1"], dict(os.environ))  # modprobe failing

    said: list[str] = []
    monkeypatch.setattr(pminit, "spawn", spawn)
    monkeypatch.setattr(pminit, "say", said.append)
    pminit.ShareModules.load()
    assert spawned == [["/usr/sbin/modprobe", "-a", "9p", "9pnet_virtio", "virtiofs"]]
    pminit.ShareModules.wait()
    pminit.ShareModules.wait()  # reaped once: a second wait has nothing to wait for
    assert said == ["cannot load 9p 9pnet_virtio virtiofs: shares will fail (see /run/modprobe-shares.log)"]

    fresh = _pminit()
    monkeypatch.setattr(fresh, "_seed_file", lambda name: json.dumps(mounts[2:]).encode())
    monkeypatch.setattr(fresh, "spawn", spawn)
    fresh.ShareModules.load()  # only sshfs: nothing to load, nothing spawned
    fresh.ShareModules.wait()
    assert len(spawned) == 1
