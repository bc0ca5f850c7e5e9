"""The host agent with a real machine and the real guest agent: engine socket for the docker CLI, ports live
when `docker run -d -p` returns, clash errors, healing after the SSH link is cut, kill -9 repair, clock."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from support.hostagent_vm import VmMachine, env_of, free_port, http_status, refused, wait_for

HTTPD = ["pymachine/busybox", "httpd", "-f", "-p", "80", "-h", "/bin"]  # any HTTP answer proves the path


@pytest.fixture
def vm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    machine: VmMachine = request.getfixturevalue("hostagent_machine")
    with env_of(machine):
        yield machine
    machine.remove_all_containers()


def status(vm: VmMachine) -> dict:
    from pymachine.hostvm.hostagent import launcher

    return launcher.status(vm.name)


def events(vm: VmMachine) -> list:
    from pymachine.hostvm.hostagent.events import read_events

    return read_events(vm.home / "m" / vm.name / "events.jsonl")[0]


def test_docker_cli_works_through_the_forwarded_socket(vm: VmMachine) -> None:
    sock = vm.docker_socket
    assert sock.stat().st_mode & 0o777 == 0o600
    version = vm.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    assert version.startswith("1.")
    env = dict(vm.env, DOCKER_HOST=f"unix://{sock}")
    out = vm.pymachine("docker-env", vm.name).stdout
    assert f"export DOCKER_HOST=unix://{sock}" in out
    import subprocess

    ps = subprocess.run(["docker", "ps", "--format", "json"], env=env, capture_output=True, text=True)
    assert ps.returncode == 0, ps.stderr


def test_port_answers_the_moment_docker_run_returns(vm: VmMachine) -> None:
    port = free_port()
    cid = vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD).stdout.strip()
    assert http_status(port) == 404  # no sleep, no retry loop: run has returned, so the port is live
    st = status(vm)
    forward = next(f for f in st["forwards"] if f["host_port"] == port)
    assert forward["health"] == "ok" and forward["container"] == cid
    vm.docker("rm", "-f", cid)
    wait_for(lambda: refused(port), "the listener to close after rm")


def test_a_taken_host_port_fails_the_run_naming_it(vm: VmMachine) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        proc = vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD, check=False)
        assert proc.returncode != 0
        assert f"host port 127.0.0.1:{port} is already in use" in proc.stderr
    finally:
        blocker.close()


def test_restarting_the_guest_sshd_heals_socket_and_ports(vm: VmMachine) -> None:
    port = free_port()
    vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD)
    before = status(vm)["link"]["reconnects"]
    # Detached, so it survives the session it was started from: kill sshd (all sessions), start it again.
    vm.ssh(
        "setsid sh -c 'sleep 0.3; pkill -x sshd; sleep 1; /usr/sbin/sshd -E /var/log/sshd.log' "
        ">/dev/null 2>&1 </dev/null &"
    )
    wait_for(lambda: status(vm)["link"]["reconnects"] > before, "the link to come back")
    # nothing done by the user: the docker CLI and the port work again
    assert vm.docker("ps", "-q").stdout.strip()
    assert http_status(port) == 404
    wait_for(lambda: status(vm)["state"] == "ready", "ready again")
    assert [f["health"] for f in status(vm)["forwards"]] == ["ok"]
    kinds = [e.get("state") for e in events(vm) if e.type == "link"]
    assert "down" in kinds and kinds[-1] == "up"


def test_killing_the_transport_heals(vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import control

    port = free_port()
    vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD)
    before = status(vm)["link"]["reconnects"]
    assert control.call(vm.home / "m" / vm.name / "ha.sock", "drop-link")["ok"]
    assert http_status(port) == 404  # QEMU's forward needs no link; an SSH-path one waits for the new link
    wait_for(lambda: status(vm)["link"]["reconnects"] > before, "the link to come back")


def test_kill_9_of_the_host_agent_is_repaired_by_status_and_start(vm: VmMachine) -> None:
    from pymachine.hostvm import machines
    from pymachine.hostvm.hostagent import launcher

    port = free_port()
    vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD)
    for repair in ("status", "start"):
        pid = launcher.agent_pid(vm.name)
        assert pid is not None
        supervisor = launcher.supervisor_pid(vm.name)
        if supervisor is not None:  # its supervisor would restart it at once (tests/vm/test_faults_host.py)
            os.kill(supervisor, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: launcher.agent_pid(vm.name) is None, "the agent to die")
        if repair == "status":  # what `pymachine list` shows
            assert launcher.status(vm.name, repair=True)["repaired"] is True
            wait_for(lambda: status(vm)["state"] == "ready", "the repaired agent")
        else:
            machines.start(vm.name)
        assert launcher.agent_pid(vm.name) not in (None, pid)
        # the forward came back from the guest's resync: nobody re-ran the container
        assert http_status(port) == 404
        assert vm.docker("ps", "-q").stdout.strip()


def test_guest_clock_is_set_after_a_jump(vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import control

    vm.ssh(f"date -s @{int(time.time()) - 3600}")
    answer = control.call(vm.home / "m" / vm.name / "ha.sock", "drop-link")  # reconnect runs the clock check
    assert answer["ok"]
    wait_for(
        lambda: any(e.type == "clock" and (e.get("skew") or 0) > 3000 for e in events(vm)), "clock event"
    )
    _, out, _ = vm.ssh("date +%s")
    assert abs(int(out) - time.time()) < 30
    assert json.loads(json.dumps(status(vm)["clock"]))["resyncs"] >= 1


def test_a_drifted_guest_agent_is_reprovisioned_and_containers_survive(
    vm: VmMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymachine.hostvm.hostagent import control, launcher

    # A source checkout does not re-provision by default (see provision.enabled): opt in, restart the agent.
    monkeypatch.setenv("PYMACHINE_AGENT_REPROVISION", "1")
    launcher.stop(vm.name)
    launcher.ensure_running(vm.name, timeout=240)
    port = free_port()
    cid = vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD).stdout.strip()
    # Make the guest's copy differ from the host's, as an upgrade of the host package would.
    status_code, _, err = vm.ssh("echo '# drift' >> /opt/pymachine/agent/pymachine_agent/protocol.py")
    assert status_code == 0, err
    assert control.call(vm.home / "m" / vm.name / "ha.sock", "drop-link")["ok"]  # the check runs on connect
    wait_for(
        lambda: any(e.type == "agent" and e.get("action") == "reprovisioned" for e in events(vm)),
        "the re-provision",
    )
    wait_for(
        lambda: (status(vm).get("guest_agent") or {}).get("checksum_match") is True, "matching checksums"
    )
    wait_for(lambda: status(vm)["state"] == "ready", "ready")
    assert vm.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    assert http_status(port) == 404
