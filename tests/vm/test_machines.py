"""Machine lifecycle on real VMs (TCG on this host). Boots are few: one session machine, plus one for
'two at once' (on the direct-QEMU driver, so both drivers boot), and restarts after kill -9 / stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import paramiko
import pytest
from support.machines import StartedMachine, cli, new_home, unique_name

from pymachine.hostvm import machines, paths, ssh
from pymachine.hostvm.drivers.procscan import alive
from pymachine.hostvm.errors import PymachineError


def _listed(m: StartedMachine) -> dict[str, dict]:
    result = m.cli("list", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in _json_lines(result.stdout)}


def test_running_machine_answers_ssh_with_exit_status(machine: StartedMachine) -> None:
    assert ssh.run(machine.name, "hostname")[1].decode().strip() == machine.name
    result = machine.cli("ssh", machine.name, "--", "sh", "-c", "echo out; exit 3")
    assert (result.returncode, result.stdout.strip()) == (3, "out")
    # Without CMD it is a login shell (a PTY when stdin is a terminal; here a pipe feeds it).
    shell = subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", "ssh", machine.name],
        input="echo in-shell; exit 5\n",
        capture_output=True,
        text=True,
        env=machine.env(),
        timeout=120,
    )
    assert shell.returncode == 5 and "in-shell" in shell.stdout
    row = _listed(machine)[machine.name]
    assert row["state"] == "running" and row["ssh_port"] and row["accelerator"] in ("tcg", "kvm")
    inspected = json.loads(machine.cli("inspect", machine.name).stdout)
    assert inspected["pid"] and alive(inspected["pid"])
    # `start` on a running machine is idempotent: every readiness stage passes again, no second VM.
    again = machine.cli("start", machine.name)
    assert again.returncode == 0, again.stderr
    assert json.loads(machine.cli("inspect", machine.name).stdout)["pid"] == inspected["pid"]


def test_wrong_host_key_is_refused(machine: StartedMachine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    known = paths.machine(machine.name).known_hosts
    pinned = known.read_text()
    other = ssh.generate_keypair(tmp_path / "other", "other").split()
    known.write_text(f"{ssh.host_alias(machine.name)} {other[0]} {other[1]}\n")
    try:
        with pytest.raises(PymachineError, match="not the pinned one: refused") as info:
            ssh.connect(machine.name)
        assert isinstance(info.value.__cause__, paramiko.BadHostKeyException)
        result = machine.cli("ssh", machine.name, "--", "true")
        assert result.returncode == 255 and "host key" in result.stderr.lower()
    finally:
        known.write_text(pinned)
    assert ssh.run(machine.name, "true")[0] == 0


def test_kill_9_of_qemu_then_list_and_start(machine: StartedMachine) -> None:
    pid = machines.get(machine.name).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _listed(machine)[machine.name]["state"] == "stopped"
    result = machine.cli("start", machine.name)
    assert result.returncode == 0, result.stderr
    assert _listed(machine)[machine.name]["state"] == "running"
    assert ssh.run(machine.name, "true")[0] == 0


def test_stop_then_start_keeps_the_disk(machine: StartedMachine) -> None:
    assert ssh.run(machine.name, "echo kept >/root/marker && sync")[0] == 0
    result = machine.cli("stop", "--shutdown", machine.name)  # a power-off (plain `stop` saves the state)
    assert result.returncode == 0, result.stderr
    assert "forcing" not in result.stderr  # the guest powered itself off
    assert _listed(machine)[machine.name]["state"] == "stopped"
    assert ssh.read_banner(machines.get(machine.name).ssh_port or 0, timeout=1) is False
    result = machine.cli("start", machine.name)
    assert result.returncode == 0, result.stderr
    assert "stage 4 of" in result.stderr
    assert ssh.run(machine.name, "cat /root/marker")[1] == b"kept\n"


def test_two_machines_at_once_then_forced_delete(machine: StartedMachine) -> None:
    """A second machine (direct-QEMU driver) next to the libvirt one: distinct names, ports, hostnames."""
    name = unique_name("q")
    assert machine.cli("create", name, "--driver", "qemu", "--cpus", "1", "--memory", "768M").returncode == 0
    try:
        result = machine.cli("start", name)
        assert result.returncode == 0, result.stderr
        rows = _listed(machine)
        assert rows[name]["state"] == rows[machine.name]["state"] == "running"
        assert rows[name]["ssh_port"] != rows[machine.name]["ssh_port"]
        assert rows[name]["driver"] == "qemu" and rows[name]["cpus"] == 1
        assert ssh.run(name, "hostname")[1].decode().strip() == name
        assert ssh.run(machine.name, "hostname")[1].decode().strip() == machine.name
        # Both drivers can add a forward to a running VM (capability flag, not driver name).
        for each in (name, machine.name):
            drv = machines.driver_for(machines.load_config(each))
            assert drv.capabilities.hostfwd_add
            extra = machines.pick_port(each, None)
            drv.hostfwd_add(each, extra, 22)
            assert ssh.wait_banner(extra, time.monotonic() + 120)
        refused = machine.cli("delete", name)  # running: needs --force, and changes nothing
        assert refused.returncode != 0 and "--force" in refused.stderr
        assert _listed(machine)[name]["state"] == "running"
        pid = machines.get(name).pid
        assert machine.cli("delete", "--force", name).returncode == 0
        assert name not in _listed(machine)
        assert not paths.machine(name).dir.exists()
        assert pid is not None and not alive(pid)
    finally:
        if paths.machine(name).dir.exists():
            machines.delete(name, force=True)
    assert _listed(machine)[machine.name]["state"] == "running"


def test_create_then_delete_a_stopped_machine() -> None:
    home = new_home()
    name = unique_name("d")
    assert cli(home, "create", name).returncode == 0
    listed = _json_lines(cli(home, "list", "--format", "json").stdout)
    assert [(m["name"], m["state"]) for m in listed] == [(name, "stopped")]
    result = cli(home, "delete", name)
    assert result.returncode == 0, result.stderr
    assert _json_lines(cli(home, "list", "--format", "json").stdout) == []
    assert not (home / "m" / name).exists()
    shutil.rmtree(home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "Bad_Name"), "name: 'Bad_Name' must be"),
        (("create", "x", "--memory", "1k"), "memory: must be at least 256M"),
        (("delete", "nosuchmachine"), "machine 'nosuchmachine' does not exist"),
        (("start", "nosuchmachine"), "machine 'nosuchmachine' does not exist"),
    ],
)
def test_refusals_change_nothing(machine: StartedMachine, args: tuple[str, ...], message: str) -> None:
    before = sorted(p.name for p in (machine.home / "m").iterdir())
    result = machine.cli(*args)
    assert result.returncode != 0 and message in result.stderr and "hint:" in result.stderr
    assert sorted(p.name for p in (machine.home / "m").iterdir()) == before


def test_duplicate_name_refused(machine: StartedMachine) -> None:
    config = paths.machine(machine.name).config.read_bytes()
    result = machine.cli("create", machine.name, "--memory", "2G")
    assert result.returncode != 0 and f"machine '{machine.name}' already exists" in result.stderr
    assert paths.machine(machine.name).config.read_bytes() == config
    assert _listed(machine)[machine.name]["state"] == "running"


def test_a_failed_stage_is_named_with_hint_and_log() -> None:
    """No boot needed: a machine whose base image vanished fails in stage 1, and says what to do."""
    home = new_home()
    name = unique_name("f")
    try:
        assert cli(home, "create", name).returncode == 0
        config_file = home / "m" / name / "config.json"
        config = json.loads(config_file.read_text())
        config["image"]["kernel"] = str(home / "gone" / "vmlinuz")
        config_file.write_text(json.dumps(config))
        result = cli(home, "start", name)
        assert result.returncode == 1
        assert "error: stage 1 of " in result.stderr and ": domain up failed: the base image" in result.stderr
        assert "hint: the image cache was cleared: recreate the machine" in result.stderr
        assert f"log: {home / 'm' / name / 'console.log'}" in result.stderr
        assert _json_lines(cli(home, "list", "--format", "json").stdout)[0]["state"] == "stopped"
    finally:
        cli(home, "delete", "--force", name)
        shutil.rmtree(home, ignore_errors=True)


def _json_lines(text: str) -> list[dict]:
    """`--format json`: one JSON object per line, as docker prints it."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
