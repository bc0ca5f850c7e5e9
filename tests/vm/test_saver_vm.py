"""The resource saver on a booted machine (direct-QEMU driver): an idle machine is paused and its QEMU stops
using CPU; every way in wakes it (the docker CLI on the engine socket, a published port, `pymachine ssh`, the
façade the desktop app calls, `pymachine start`); a running container keeps it awake; memory a container frees
goes back to the host (virtio-balloon free page reporting) and a deleted image shrinks the qcow2 (discard).

Published ports exist only while their container runs, and a running container keeps the machine awake, so the
port path is tested on a machine paused through the control socket's `pause` (what the saver does, forced).
The idle timeout is set in seconds through the control socket (`saver` op); PYMACHINE_IDLE_SUSPEND_S does the
same for a whole agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, booted_machine, env_of, free_port, http_status, wait_for
from support.saver import MiB, allocated, big_image_tar, cpu_ticks, rss_bytes

IDLE_S = 3.0


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmMachine]:
    """Machine `sv` of this file: created, started, busybox loaded (tests set the saver's timeout)."""
    with booted_machine(tmp_path_factory.mktemp("sv"), "sv", home_mount=False) as machine:
        yield machine


@pytest.fixture
def vm(sm: VmMachine) -> Iterator[VmMachine]:
    with env_of(sm):
        set_timeout(sm, IDLE_S)
        yield sm
        set_timeout(sm, 0)
        sm.remove_all_containers()


# -- helpers ------------------------------------------------------------------------------------------------
def control(m: VmMachine, op: str, **args: object) -> dict:
    from pymachine.hostvm.hostagent import control as ctl

    return ctl.call(m.home / "m" / m.name / "ha.sock", op, timeout=60, **args)


def set_timeout(m: VmMachine, seconds: float) -> None:
    assert control(m, "saver", timeout_s=seconds)["saver"]["timeout_s"] == seconds


def saver(m: VmMachine) -> dict:
    return control(m, "saver")["saver"]


def qemu_pid(m: VmMachine) -> int:
    return int((m.home / "m" / m.name / "qemu.pid").read_text())


def qemu_paused(m: VmMachine) -> bool:
    from pymachine.hostvm.drivers.qemu import QemuDriver

    return QemuDriver().paused(m.name)


def wait_paused(m: VmMachine) -> None:
    wait_for(lambda: saver(m)["state"] == "paused" and qemu_paused(m), "the idle machine to be paused", 120)


def state_column(m: VmMachine) -> str:
    out = m.pymachine("list", "--format", "json").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]  # JSON lines, as docker prints
    return next(r["state"] for r in rows if r["name"] == m.name)


def paused_since(m: VmMachine, seconds: float) -> bool:
    at = saver(m)["paused_at"]
    return at is not None and time.time() - at >= seconds


# -- pausing ------------------------------------------------------------------------------------------------
def test_an_idle_machine_is_paused_and_its_qemu_uses_no_cpu(vm: VmMachine) -> None:
    pid = qemu_pid(vm)
    wait_paused(vm)
    assert state_column(vm) == "running (idle, paused)"
    inspect = json.loads(vm.pymachine("inspect", vm.name).stdout)
    assert (
        inspect["state"] == "running (idle, paused)" and inspect["host_agent"]["saver"]["state"] == "paused"
    )
    assert inspect["host_agent"]["state"] == "ready"  # the engine socket stays, ready to wake it
    before = cpu_ticks(pid)
    wait_for(lambda: paused_since(vm, 5), "five seconds of pause")
    assert cpu_ticks(pid) - before <= 2  # clock ticks (10 ms): a paused QEMU only runs its idle main loop
    events = (vm.home / "m" / vm.name / "events.jsonl").read_text()
    assert '"type": "saver"' in events and '"state": "paused"' in events


def test_a_running_container_keeps_it_awake(vm: VmMachine) -> None:
    # create + start, not `run -d`: the docker CLI's run also leaves a wait request open until the container
    # exits, and an open client connection keeps the machine awake by itself
    vm.docker("create", "--name", "busy", "pymachine/busybox", "sleep", "600")
    vm.docker("start", "busy")
    wait_for(lambda: saver(vm)["busy"] == "1 running container(s)", "the saver to see the container", 60)
    assert saver(vm)["state"] == "awake" and not qemu_paused(vm)
    vm.docker("rm", "-f", "busy")
    wait_paused(vm)  # and once it is gone, the machine sleeps


def test_an_ssh_login_keeps_it_awake(vm: VmMachine) -> None:
    session = subprocess.Popen(
        [sys.executable, "-m", "pymachine.app.cli", "ssh", vm.name, "--", "sleep", "30"], env=vm.env
    )
    try:
        wait_for(lambda: saver(vm)["busy"] == "1 SSH login(s)", "the saver to see the SSH login", 60)
        assert saver(vm)["state"] == "awake"
    finally:
        session.kill()
        session.wait()


# -- waking -------------------------------------------------------------------------------------------------
def test_the_docker_cli_wakes_it_and_the_guest_clock_is_stepped(vm: VmMachine) -> None:
    wait_paused(vm)
    wait_for(lambda: paused_since(vm, 5), "a pause long enough to put the guest clock behind")
    wakes = saver(vm)["wakes"]
    before = time.time()
    out = vm.docker("run", "--rm", "pymachine/busybox", "date", "+%s").stdout.strip()
    # The guest clock stood still for 5 s and was stepped: it reads the host's time of the run, not 5 s
    # before it. (Not "within 3 s of the time after the run": a `run --rm` under load takes longer.)
    assert before - 2 <= int(out) <= time.time() + 1, (before, out)
    assert saver(vm)["wakes"] == wakes + 1 and not qemu_paused(vm)


def test_concurrent_first_connections_all_get_through(vm: VmMachine) -> None:
    wait_paused(vm)
    results: list[int] = []

    def client() -> None:
        results.append(vm.docker("version", "--format", "{{.Server.Version}}", check=False).returncode)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [0] * 6
    assert not qemu_paused(vm)


def test_a_published_port_wakes_a_paused_machine(vm: VmMachine) -> None:
    port = free_port()
    vm.docker(
        "run", "-d", "--name", "web", "-p", f"{port}:80", "pymachine/busybox", "httpd", "-f", "-p", "80"
    )
    assert http_status(port) == 404
    assert control(vm, "pause")["ok"]
    assert qemu_paused(vm)
    assert http_status(port) == 404
    assert not qemu_paused(vm) and saver(vm)["state"] == "awake"


def test_pymachine_ssh_wakes_it(vm: VmMachine) -> None:
    wait_paused(vm)
    out = vm.pymachine("ssh", vm.name, "--", "echo", "awake", timeout=120)
    assert out.stdout.strip() == "awake" and not qemu_paused(vm)


def test_the_desktop_apps_facade_and_start_wake_it(vm: VmMachine) -> None:
    from pymachine.hostvm import containers, machines

    wait_paused(vm)
    names = [c.name for c in containers.client(vm.name, ensure=False).containers.list(all=True)]
    assert isinstance(names, list) and not qemu_paused(vm)
    wait_paused(vm)
    assert machines.start(vm.name).state == "running" and not qemu_paused(vm)


def test_a_machine_left_paused_by_a_dead_agent_is_resumed(vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    wait_paused(vm)
    os.kill(launcher.agent_pid(vm.name), 9)
    vm.pymachine("list")  # repairs the agent, which resumes the machine before it links up
    wait_for(lambda: not qemu_paused(vm), "the new host agent to resume the machine", 120)
    launcher.ensure_running(vm.name)
    assert vm.docker("version", "--format", "{{.Server.Version}}").returncode == 0


# -- memory and disk back to the host -----------------------------------------------------------------------
def test_memory_a_container_frees_goes_back_to_the_host(vm: VmMachine) -> None:
    set_timeout(vm, 0)  # awake throughout: free page reporting runs in the guest
    pid = qemu_pid(vm)
    baseline = rss_bytes(pid)
    vm.docker(
        "run", "-d", "--name", "hog", "--shm-size", "600m", "pymachine/busybox",
        "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=500 && exec sleep 600",
    )  # fmt: skip
    wait_for(lambda: rss_bytes(pid) > baseline + 400 * MiB, "the container's 500 MiB to be resident", 180)
    vm.docker("rm", "-f", "hog")  # its /dev/shm goes with it
    # without free page reporting QEMU keeps every page the guest ever touched
    wait_for(
        lambda: rss_bytes(pid) < baseline * 1.2, f"QEMU's RSS back within 20% of {baseline >> 20} MiB", 60
    )


def test_deleting_an_image_shrinks_the_qcow2(vm: VmMachine, tmp_path: Path) -> None:
    disk = vm.home / "m" / vm.name / "disk.qcow2"
    before = allocated(disk)
    vm.docker("load", "-i", str(big_image_tar(tmp_path / "big.tar")), timeout=600)
    # The load writes the layer's 100 MiB once (its tar is kept as a tar-split index into the files), and the
    # guest's page cache may still hold the last of it when `docker load` returns: wait for the writeback
    # (dirty pages expire after 30 s) instead of reading the size at once.
    wait_for(lambda: allocated(disk) - before >= 90 * MiB, "the loaded image's bytes to reach the qcow2", 120)
    vm.docker("rmi", "saver/big:1")
    # online discard returns part at once; the fstrim before the next idle pause the rest
    wait_for(lambda: allocated(disk) < before + 20 * MiB, "the qcow2 to give the image's space back", 180)


# -- the libvirt driver -------------------------------------------------------------------------------------
def test_libvirt_pauses_an_idle_machine_and_the_docker_cli_wakes_it() -> None:
    """virDomainSuspend / virDomainResume, on a machine of its own (the rest of the file uses direct QEMU)."""
    from support.machines import home_env, started_machine

    from pymachine.hostvm import machines

    with started_machine("svl", driver="libvirt", home_mount=False) as sm, home_env(sm.home):
        m = VmMachine(sm.name, sm.home, sm.env())
        drv = machines.driver_for(machines.load_config(m.name))
        set_timeout(m, IDLE_S)
        wait_for(lambda: saver(m)["state"] == "paused" and drv.paused(m.name), "the domain paused", 120)
        assert state_column(m) == "running (idle, paused)"
        sock = f"unix://{m.docker_socket}"
        version = subprocess.run(
            ["docker", "-H", sock, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert version.returncode == 0, version.stderr
        assert not drv.paused(m.name) and saver(m)["wakes"] == 1
