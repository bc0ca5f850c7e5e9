"""The engine socket's serial path (hostagent/serialpath.py, the guest's api/serialport.py) on real machines
(direct-QEMU driver): docker.sock takes the VM's virtio-serial port on a fresh machine started with the switch
on (PYMACHINE_ENGINE_PORT=on; off by default); `docker load` and
`docker save` round-trip an image byte for byte through it; `docker run` attached, stdin half-closed, works;
kill -9 of the host agent drops the channels and its successor starts a new session; a container cannot open
the port even by making its node; a machine started with the default (off) has no port and takes the fast
path, and its saved state boots cold once (with the reason) to gain the port when the switch is on.
Evidence: the host agent's counters, `inspect`, the machine folder, the guest agent's log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.hostagent_vm import VmMachine, booted_machine, env_of, wait_for
from support.random_image import random_image_archive

from pymachine.hostvm.hostagent.serialpath import ENV_SWITCH

B = "pymachine/busybox"


def engine(vm: VmMachine) -> dict[str, Any]:
    from pymachine.hostvm.hostagent import launcher

    return launcher.status(vm.name)["engine_socket"]


def serial_up(vm: VmMachine) -> dict[str, Any]:
    wait_for(lambda: engine(vm)["via"] == "serial", "the engine socket's serial path", 180)
    return engine(vm)


@pytest.fixture(scope="module")
def serial_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmMachine]:
    """A machine of this module's, started with PYMACHINE_ENGINE_PORT=on (the shared machines keep the
    default, off); this process's environment points at it while the module runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_SWITCH, "on")
        with booted_machine(tmp_path_factory.mktemp("vser"), "vser", home_mount=False) as machine:
            machine.env[ENV_SWITCH] = "on"
            with env_of(machine):
                yield machine


def test_docker_goes_through_the_serial_port(serial_vm: VmMachine) -> None:
    port = serial_vm.home / "m" / serial_vm.name / "engine.port"
    # in the machine folder, which others cannot enter (0700; the group bits show an ACL's mask when QEMU runs
    # as its own user: qemu_user.py grants that user alone)
    assert port.is_socket() and port.parent.stat().st_mode & 0o007 == 0
    before = serial_up(serial_vm)
    out = serial_vm.docker("run", "--rm", B, "echo", "attached").stdout
    assert out.strip() == "attached"
    # stdin half-closed by the client while the container's output still flows back (EOF one way)
    context = f"pymachine-{serial_vm.name}"
    proc = subprocess.run(
        ["docker", "--context", context, "run", "--rm", "-i", B, "sh", "-c", "cat; echo"],
        input="line one\nline two\n", capture_output=True, text=True, env=serial_vm.env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "line one\nline two\n\n", proc
    after = engine(serial_vm)
    assert after["serial"]["connections"] > before["serial"]["connections"]
    assert after["serial"]["fallbacks"] == before["serial"]["fallbacks"]
    assert after["fast"]["connections"] == before["fast"]["connections"]  # none took the fast path
    assert after["failures"] == before["failures"]
    assert '"via": "serial"' in serial_vm.pymachine("inspect", serial_vm.name).stdout
    from pymachine.hostvm import status

    assert [s.engine_path for s in status.all_statuses() if s.machine.name == serial_vm.name] == ["serial"]
    # the host end is QEMU's unix socket in the 0700 folder, the guest end root's node
    rc, out, _ = serial_vm.ssh("stat -c '%U %a' /dev/vport*p*")
    assert rc == 0 and set(out.decode().split("\n")[0].split()) == {"root", "600"}, out


def test_load_and_save_round_trip_byte_for_byte(serial_vm: VmMachine, tmp_path: Path) -> None:
    serial_up(serial_vm)
    archive = tmp_path / "img.tar"
    random_image_archive(archive, 16 << 20, "serial-rt:1")
    before = engine(serial_vm)["serial"]["connections"]
    assert "serial-rt:1" in serial_vm.docker("load", "-i", str(archive), timeout=900).stdout
    saved = tmp_path / "saved.tar"
    serial_vm.docker("save", "-o", str(saved), "serial-rt:1", timeout=900)
    with tarfile.open(archive) as a, tarfile.open(saved) as b:
        sent = a.extractfile("l/layer.tar").read()  # type: ignore[union-attr]
        layers = json.load(b.extractfile("manifest.json"))[0]["Layers"]  # type: ignore[arg-type]
        back = b.extractfile(layers[-1]).read()  # type: ignore[union-attr]
    assert back == sent
    assert engine(serial_vm)["serial"]["connections"] >= before + 2 and engine(serial_vm)["via"] == "serial"
    serial_vm.docker("rmi", "serial-rt:1")


def test_a_container_cannot_open_the_port(serial_vm: VmMachine) -> None:
    """The node is root's in the guest, and no container's device allowlist has it: making it with mknod (a
    default capability, as in Docker) gets a node that does not open, even beside a --device it was given."""
    find = 'for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = org.pymachine.engine ] && cat $p/dev;'
    find += " done"
    rc, out, err = serial_vm.ssh(find)
    assert rc == 0, err
    major, minor = out.decode().strip().split(":")
    script = f"mknod /p c {major} {minor} && echo made >&2; exec 3<>/p && echo opened; head -c 1 /p | wc -c"
    proc = serial_vm.docker("run", "--rm", "--device", "/dev/fuse", B, "sh", "-c", script, check=False)
    assert "made" in proc.stderr and "opened" not in proc.stdout, proc
    assert any(d in proc.stderr for d in ("Operation not permitted", "Permission denied")), proc.stderr
    assert engine(serial_vm)["via"] == "serial"  # and the path is unharmed
    serial_vm.docker("ps")


def test_kill_9_of_the_host_agent_then_a_new_session(serial_vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    serial_up(serial_vm)
    attached = subprocess.Popen(  # a channel open when the agent dies: its client must end, not hang
        ["docker", "--context", f"pymachine-{serial_vm.name}", "run", "--rm", B, "sleep", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=serial_vm.env,
    )  # fmt: skip
    wait_for(lambda: serial_vm.docker("ps", "-q").stdout.strip() != "", "the container to run")
    supervisor = launcher.supervisor_pid(serial_vm.name)
    if supervisor is not None:
        os.kill(supervisor, signal.SIGKILL)
    os.kill(launcher.agent_pid(serial_vm.name), signal.SIGKILL)
    try:
        wait_for(lambda: launcher.agent_pid(serial_vm.name) is None, "the agent to die")
        attached.wait(timeout=60)  # its connection went with the agent
        assert launcher.status(serial_vm.name, repair=True)["repaired"] is True
        wait_for(lambda: launcher.status(serial_vm.name)["state"] == "ready", "the repaired agent")
        serial_up(serial_vm)
        assert serial_vm.docker("run", "--rm", B, "echo", "again").stdout.strip() == "again"
        assert engine(serial_vm)["serial"]["connections"] >= 1
        # every channel closed once its client is gone (a leak would keep them)
        wait_for(lambda: engine(serial_vm)["serial"]["channels"] == 0, "the channels to close", 60)
        rc, log, _ = serial_vm.ssh("grep -c 'serial path: up' /var/log/pymachine-agent.log")
        assert int(log.split()[0]) >= 2  # the guest agent started over with the new agent's hello
    finally:
        if attached.poll() is None:
            attached.kill()
        if launcher.agent_pid(serial_vm.name) is None:
            launcher.status(serial_vm.name, repair=True)


@pytest.fixture
def off_vm(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A machine of its own, started with the default (the switch off): its VM has no serial port (no shares:
    the direct-QEMU driver saves the state of a VM without virtiofs devices only)."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    with booted_machine(tmp_path_factory.mktemp("vser-off"), "vseroff", home_mount=False) as machine:
        yield machine


def test_without_the_port_the_fast_path_then_a_cold_boot_gains_it(off_vm: VmMachine) -> None:
    from pymachine.hostvm import machines

    wait_for(lambda: engine(off_vm)["via"] == "fast", "the fast path (the VM has no serial port)")
    folder = off_vm.home / "m" / off_vm.name
    assert not (folder / "engine.port").exists()
    assert engine(off_vm)["serial"]["state"] == "off"
    assert off_vm.docker("run", "--rm", B, "echo", "fast").stdout.strip() == "fast"
    with env_of(off_vm):
        machines.stop(off_vm.name)  # saves its state (the direct-QEMU driver can)
        assert (folder / "saved.json").exists()
        os.environ[ENV_SWITCH] = "on"  # monkeypatch (the fixture's) puts it back
        off_vm.env[ENV_SWITCH] = "on"
        said: list[str] = []
        machines.start(off_vm.name, lambda m: said.append(str(m)))
    assert any("cold boot: the saved VM has no engine port" in m for m in said), said
    assert (folder / "engine.port").is_socket()
    wait_for(lambda: engine(off_vm)["via"] == "serial", "the serial path after the cold boot", 180)
    assert off_vm.docker("run", "--rm", B, "echo", "serial").stdout.strip() == "serial"
