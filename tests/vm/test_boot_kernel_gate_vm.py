"""A cold boot's engine answers before the machine's kernel modules are in (issue 14, cold boot, eighth pass).

The guest init starts the agent right after sshd and loads the modules once the agent asks (its socket
answers); the agent's engine starts once they are in, and holds what needs them meanwhile
(pymachine_agent/kernelgate.py). One machine for the file, the tests in order: a container created the
instant `start` returns runs; then, with a module file taken away, the next cold boot's engine still answers
`/_ping` while a container create gets the reason (503), not a hang or a bare failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.agent import UnixHTTPConnection, busybox_tarball
from support.machines import StartedMachine, home_env, started_machine

from pymachine.hostvm import machines, paths, ssh

BUSYBOX = "pymachine/busybox:latest"


@pytest.fixture(scope="module")
def kg_machine() -> Iterator[StartedMachine]:
    with started_machine("kg", home_mount=False) as m, home_env(m.home):
        status, _ = call(m, "POST", "/images/load?quiet=1", busybox_tarball().read_bytes())
        assert status == 200
        yield m


def call(m: StartedMachine, method: str, url: str, body: object = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(str(paths.machine(m.name).docker_socket), timeout=300)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def cold_boot(m: StartedMachine) -> None:
    machines.stop(m.name, shutdown=True)
    machines.start(m.name)


def guest(m: StartedMachine, command: str) -> str:
    status, out, err = ssh.run(m.name, command)
    assert status == 0, err
    return out.decode()


def test_a_container_created_the_instant_the_engine_answers_runs(kg_machine: StartedMachine) -> None:
    m = kg_machine
    with home_env(m.home):
        cold_boot(m)
        # at once: on this boot the modules may still be loading, and the engine starting
        status, body = call(m, "POST", "/containers/create", {"Image": BUSYBOX, "Cmd": ["echo", "ran"]})
        assert status == 201, body
        cid = json.loads(body)["Id"]
        assert call(m, "POST", f"/containers/{cid}/start")[0] == 204
        status, body = call(m, "POST", f"/containers/{cid}/wait")
        assert status == 200 and json.loads(body)["StatusCode"] == 0, body
        assert b"ran" in call(m, "GET", f"/containers/{cid}/logs?stdout=1")[1]
        out = guest(m, "cat /run/pymachine-init.log; cat /run/pymachine/modules.json")
    steps = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    assert steps.index("agent") < steps.index("modules"), out  # the agent did not wait for them
    assert '"status": 0' in out, out


def test_failed_modules_give_the_reason_while_the_engine_answers(kg_machine: StartedMachine) -> None:
    m = kg_machine
    with home_env(m.home):
        # modprobe fails on the next boot (the file's path is kept to put it back)
        guest(m, "modinfo -n bridge > /root/bridge.path && mv $(cat /root/bridge.path) /root/bridge.ko.away")
        try:
            cold_boot(m)
            assert call(m, "GET", "/_ping") == (200, b"OK")
            assert call(m, "GET", "/version")[0] == 200
            status, body = call(m, "POST", "/containers/create", {"Image": BUSYBOX, "Cmd": ["true"]})
            assert status == 503, body
            message = json.loads(body)["message"]
            assert "kernel modules failed to load" in message and "/run/modprobe.log" in message, message
            assert call(m, "GET", "/_ping") == (200, b"OK")
            assert "bridge" in guest(m, "cat /run/modprobe.log")
        finally:
            guest(m, "mv /root/bridge.ko.away $(cat /root/bridge.path)")
