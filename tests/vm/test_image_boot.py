"""Build the guest image (shared cache) and boot it with plain QEMU: the init, sshd and the seed work."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from support.guestboot import BootedGuest, boot_guest

from pymachine.hostvm import image


@pytest.fixture(scope="module")
def manifest() -> image.ImageManifest:
    # The same shared cache as the pymachine_home fixture (conftest.SHARED_CACHE), for the whole module.
    mp = pytest.MonkeyPatch()
    mp.setenv("PYMACHINE_CACHE", os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
    try:
        yield image.ensure_image()
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def guest(manifest: image.ImageManifest, tmp_path_factory: pytest.TempPathFactory) -> BootedGuest:
    # A disk larger than the base image, so the init's online resize2fs has something to do.
    with boot_guest(
        manifest, tmp_path_factory.mktemp("boot"), disk_bytes=manifest.virtual_bytes + (1 << 30)
    ) as g:
        yield g


def test_manifest_files_exist(manifest: image.ImageManifest) -> None:
    for path in (manifest.kernel, manifest.initrd, manifest.disk):
        assert path.is_file() and path.is_absolute()
    assert manifest.disk_bytes == manifest.disk.stat().st_size
    assert manifest.disk_bytes <= 400 << 20
    assert "init=/sbin/pymachine-init" in manifest.cmdline
    # (not inspect_image(): the agent sources may change under a live tree between build and inspect)
    assert image.ImageManifest.load(manifest.folder) == manifest


def test_base_disk_filesystem_is_clean(manifest: image.ImageManifest, tmp_path: Path) -> None:
    # mke2fs -d from a hard-link copy of the cached rootfs: the result must fsck clean, link counts included.
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(manifest.disk), str(raw)], check=True)
    result = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_offered_host_key_is_the_seeded_one(guest: BootedGuest) -> None:
    offered = guest.ssh().get_transport().get_remote_server_key()
    key_type, key_b64 = guest.host.public_line.split()[:2]
    assert offered.get_name() == key_type
    assert offered.asbytes() == base64.b64decode(key_b64)


def test_runs_a_command_and_prints_ready(guest: BootedGuest) -> None:
    assert guest.run("true").status == 0
    assert "PYMACHINE_READY" in guest.wait_for_console("PYMACHINE_READY")
    result = guest.run("hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    assert result.stdout.splitlines()[0] == "pmtest"
    assert "/sbin/pymachine-init" in result.stdout


def test_cgroup2_has_the_controllers_containers_need(guest: BootedGuest) -> None:
    result = guest.run("stat -f -c %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.subtree_control")
    fs_type, controllers = result.stdout.splitlines()
    assert fs_type == "cgroup2fs"
    assert {"cpu", "memory", "pids", "io"} <= set(controllers.split())


def test_guest_agent_is_importable_and_supervised(guest: BootedGuest) -> None:
    result = guest.run('python3 -c "import pymachine_agent, sys; print(pymachine_agent.__file__)"')
    assert result.status == 0, result.stderr
    assert result.stdout.strip() == "/opt/pymachine/agent/pymachine_agent/__init__.py"
    # PID 1 started it (or is retrying it): its log exists, and a running agent's parent is PID 1.
    assert guest.run("test -f /var/log/pymachine-agent.log").status == 0
    pids = guest.run("pgrep -f 'pymachine_agent serve' || true").stdout.split()
    for pid in pids:
        assert guest.run(f"ps -o ppid= -p {pid}").stdout.strip() in ("1", "")


def test_engine_kernel_features(guest: BootedGuest) -> None:
    # the init loads the engine's modules once the agent asks (kernelgate): on a fresh boot, a few seconds
    # after sshd answers, and it writes modules.json when they are in
    result = guest.run(
        "for i in $(seq 600); do test -e /run/pymachine/modules.json && break; sleep 0.2; done; "
        "for m in overlay veth bridge br_netfilter nf_tables; do test -d /sys/module/$m && echo $m; done; "
        "ip -4 -o addr show eth0; ip route show default; cat /etc/resolv.conf"
    )
    out = result.stdout
    for module in ("overlay", "veth", "bridge", "br_netfilter", "nf_tables"):
        assert module in out.split()
    assert "10.0.2.15/24" in out
    assert "default via 10.0.2.2" in out
    assert "nameserver 10.0.2.3" in out


def test_root_filesystem_grew_to_the_disk(guest: BootedGuest, manifest: image.ImageManifest) -> None:
    # resize2fs runs in the background at boot; wait for it rather than for a fixed time.
    result = guest.run("for i in $(seq 100); do grep -q 'is now' /run/resize2fs.log 2>/dev/null && break; "
                       "sleep 0.3; done; df -B1 --output=size / | tail -1")  # fmt: skip
    assert int(result.stdout.strip()) > manifest.virtual_bytes


def test_poweroff_stops_the_machine(manifest: image.ImageManifest, tmp_path: Path) -> None:
    with boot_guest(manifest, tmp_path) as g:
        assert g.run("/sbin/pymachine-poweroff").status == 0
        g.process.wait(timeout=120)  # QEMU exits when the guest powers off (-no-reboot)
        assert "pymachine: powering off" in g.console()


def test_acpi_power_button_shuts_down_gracefully(manifest: image.ImageManifest, tmp_path: Path) -> None:
    with boot_guest(manifest, tmp_path) as g:
        g.wait_for_console("PYMACHINE_READY")  # the init watches the button once the modules are in
        g.powerdown()
        g.process.wait(timeout=120)
        console = g.console()
        assert "power off requested" in console and "pymachine: powering off" in console
