"""The engine socket's fast path (hostagent/fastpath.py, the guest's api/relay.py) on the shared machine `ha`
(direct-QEMU driver): docker CLI traffic goes through QEMU's user network to the guest agent's relay, admitted
by the secret the host agent handed over SSH; a connection without it gets nothing; a container cannot reach
the relay at all; SSH takes over when the monitor is unavailable or the relay's rule is gone; a paused machine
is woken by a fast-path client; kill -9 of the host agent is repaired with exactly one relay rule in QEMU.
Evidence: the host agent's counters, QEMU's `info usernet`, the guest agent's log."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.hostagent_vm import VmMachine, free_port, wait_for

from pymachine_agent import fastpath as wire

RELAY = wire.RELAY_GUEST_PORT
REFUSED_LINE = "fast path: refused a connection"


def engine(vm: VmMachine) -> dict[str, Any]:
    from pymachine.hostvm.hostagent import launcher

    return launcher.status(vm.name)["engine_socket"]


def control(vm: VmMachine, op: str, **args: object) -> dict[str, Any]:
    from pymachine.hostvm.hostagent import control as ctl

    return ctl.call(vm.home / "m" / vm.name / "ha.sock", op, timeout=60, **args)


def monitor(vm: VmMachine, command: str) -> str:
    from pymachine.hostvm.drivers.qemu import QemuDriver

    return QemuDriver().monitor_command(vm.name, command)


def relay_rules(vm: VmMachine) -> list[tuple[str, int]]:
    """QEMU's hostfwd rules to the relay: (host address, host port)."""
    from pymachine.hostvm.hostagent import qemufwd

    listed = qemufwd.parse_usernet(monitor(vm, "info usernet"))
    return [(f.host_ip, f.host_port) for f in listed if f.guest_port == RELAY]


@pytest.fixture(autouse=True)
def _fast_not_serial(ha_vm: VmMachine) -> Iterator[None]:
    """These tests are the fast path's: new connections skip the serial port (hostagent/serialpath.py, its
    own tests in test_engine_serial_vm.py), which a local machine prefers."""
    yield
    control(ha_vm, "engine-path", via="auto")


def fast_port(vm: VmMachine) -> int:
    """Wait until the engine socket goes through the fast path; its host port."""
    control(vm, "engine-path", via="fast")  # (again after a host agent restart: a new one says "auto")
    wait_for(lambda: engine(vm)["via"] == "fast", "the engine socket's fast path to be armed")
    return int(engine(vm)["fast"]["host_port"])


def refusals_logged(vm: VmMachine) -> int:
    rc, out, _ = vm.ssh(f"grep -c '{REFUSED_LINE}' /var/log/pymachine-agent.log*; true")
    return sum(int(line.rsplit(":", 1)[-1]) for line in out.decode().split() if line.strip())


def test_docker_goes_through_the_fast_path(ha_vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent.fastpath import WARM_CONNECTIONS

    port = fast_port(ha_vm)
    assert relay_rules(ha_vm) == [("127.0.0.1", port)]
    # connections through the handshake already, for the next clients (one round trip each instead of three)
    wait_for(lambda: engine(ha_vm)["fast"]["warm"] == WARM_CONNECTIONS, "connections made ahead")
    before = engine(ha_vm)
    cid = ha_vm.docker("run", "-d", "pymachine/busybox", "sleep", "300").stdout.strip()
    ha_vm.docker("cp", "/etc/hostname", f"{cid}:/tmp/copied")  # a bulk verb: an archive upload
    assert ha_vm.docker("exec", cid, "ls", "/tmp/copied").stdout.strip() == "/tmp/copied"
    assert cid[:12] in ha_vm.docker("ps", "-q").stdout
    after = engine(ha_vm)
    assert after["fast"]["connections"] > before["fast"]["connections"]
    assert after["fast"]["fallbacks"] == before["fast"]["fallbacks"]
    assert after["failures"] == before["failures"]
    wait_for(lambda: engine(ha_vm)["fast"]["warm"] == WARM_CONNECTIONS, "the ones taken made again")
    # `inspect` says which path; the relay's rule is no container port (not in the forwards `list` renders)
    inspected = ha_vm.pymachine("inspect", ha_vm.name).stdout
    assert '"via": "fast"' in inspected, inspected
    from pymachine.hostvm import status

    assert [s.engine_path for s in status.all_statuses() if s.machine.name == ha_vm.name] == ["fast"]
    assert port not in [f["host_port"] for f in control(ha_vm, "forwards")["forwards"]]


def test_a_connection_without_the_secret_gets_nothing(ha_vm: VmMachine) -> None:
    port = fast_port(ha_vm)
    logged = refusals_logged(ha_vm)
    attempts = [
        b"GET /containers/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".ljust(wire.HELLO_LEN),
        wire.hello(wire.new_secret())[0] + b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n",
    ]
    for first in attempts:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(first)
            try:
                got = sock.recv(65536)  # blocks until the relay closes: EOF, not a timeout
            except ConnectionResetError:
                got = b""
            assert got == b""
    wait_for(lambda: refusals_logged(ha_vm) >= logged + 2, "the guest agent to log both refusals", 60)
    # and the fast path still serves the host agent
    before = engine(ha_vm)["fast"]["connections"]
    ha_vm.docker("ps")
    assert engine(ha_vm)["fast"]["connections"] > before and engine(ha_vm)["via"] == "fast"


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_a_container_cannot_reach_the_relay(ha_vm: VmMachine, network: str) -> None:
    """Neither through a guest address from the bridge (the nftables guard drops it, and the relay listens on
    eth0 only) nor from the guest's own network namespace (`--network host`: to 127.0.0.1 it enters on lo;
    to 10.0.2.15 Linux counts it as arriving on eth0, and the relay's socket filter drops any source but
    slirp's)."""
    fast_port(ha_vm)
    web = free_port()
    ha_vm.docker("run", "-d", "-p", f"{web}:80", "pymachine/busybox", "httpd", "-f", "-p", "80", "-h", "/bin")
    probe = (
        f"for target in '10.0.2.15 {web}' '10.0.2.15 {RELAY}' '127.0.0.1 {RELAY}'; do"
        " printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $target > /tmp/out 2>/dev/null;"
        ' echo "$target: $(head -c 12 /tmp/out)"; done'
    )
    logged = refusals_logged(ha_vm)
    out = ha_vm.docker("run", "--rm", "--network", network, "pymachine/busybox", "sh", "-c", probe).stdout
    lines = {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines() if line)}
    # the container reaches the guest's uplink address (a published port: the probe itself works) ...
    assert lines[f"10.0.2.15 {web}"].startswith("HTTP/1."), out
    # ... but never the relay: no byte back, and the relay never saw a connection to refuse
    assert lines[f"10.0.2.15 {RELAY}"] == "" and lines[f"127.0.0.1 {RELAY}"] == "", out
    assert refusals_logged(ha_vm) == logged


def test_ssh_takes_over_when_the_monitor_is_unavailable(ha_vm: VmMachine) -> None:
    from vm.test_forward_qemu_vm import monitor_unreachable

    fast_port(ha_vm)
    with monitor_unreachable(ha_vm):
        assert control(ha_vm, "drop-link")["ok"]  # the next link-up cannot add the relay's rule
        wait_for(lambda: engine(ha_vm)["fast"]["state"] == "down", "arming to fail without a monitor")
        assert engine(ha_vm)["via"] == "ssh"
        before = engine(ha_vm)
        assert ha_vm.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        assert engine(ha_vm)["fast"]["connections"] == before["fast"]["connections"]
        assert engine(ha_vm)["connections"] > before["connections"]
    assert control(ha_vm, "drop-link")["ok"]  # the monitor is back: the next link-up arms the fast path
    fast_port(ha_vm)
    assert len(relay_rules(ha_vm)) == 1


def test_a_client_falls_back_to_ssh_when_the_relay_is_gone(ha_vm: VmMachine) -> None:
    """The relay's rule removed under the agent: that connection goes over SSH, the client sees no error, and
    the agent arms the fast path again on its own."""
    from pymachine.hostvm.hostagent.fastpath import WARM_CONNECTIONS

    port = fast_port(ha_vm)
    monitor(ha_vm, f"hostfwd_remove net0 tcp:127.0.0.1:{port}")
    before = engine(ha_vm)
    # the connections made ahead were open before the rule went and still carry the first clients
    for _ in range(WARM_CONNECTIONS + 1):
        assert ha_vm.docker("ps", "-q").returncode == 0
        if engine(ha_vm)["fast"]["fallbacks"] > before["fast"]["fallbacks"]:
            break
    after = engine(ha_vm)
    assert after["fast"]["fallbacks"] == before["fast"]["fallbacks"] + 1, after
    assert after["failures"] == before["failures"], after["last_error"]
    wait_for(lambda: engine(ha_vm)["via"] == "fast", "the fast path to be armed again")
    assert len(relay_rules(ha_vm)) == 1
    ha_vm.docker("ps")


def test_a_fast_path_client_wakes_a_paused_machine(ha_vm: VmMachine) -> None:
    from pymachine.hostvm.drivers.qemu import QemuDriver

    fast_port(ha_vm)
    assert control(ha_vm, "pause")["ok"]
    assert QemuDriver().paused(ha_vm.name)
    wakes = control(ha_vm, "saver")["saver"]["wakes"]
    before = engine(ha_vm)["fast"]["connections"]
    assert ha_vm.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert not QemuDriver().paused(ha_vm.name)
    assert control(ha_vm, "saver")["saver"]["wakes"] == wakes + 1
    assert engine(ha_vm)["fast"]["connections"] > before  # woken first, then carried on the fast path


def test_kill_9_of_the_host_agent_then_repair(ha_vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    old = fast_port(ha_vm)
    supervisor = launcher.supervisor_pid(ha_vm.name)
    if supervisor is not None:
        os.kill(supervisor, signal.SIGKILL)
    os.kill(launcher.agent_pid(ha_vm.name), signal.SIGKILL)
    try:
        wait_for(lambda: launcher.agent_pid(ha_vm.name) is None, "the agent to die")
        assert relay_rules(ha_vm) == [("127.0.0.1", old)]  # QEMU keeps it; the secret died with the agent
        assert launcher.status(ha_vm.name, repair=True)["repaired"] is True
        wait_for(lambda: launcher.status(ha_vm.name)["state"] == "ready", "the repaired agent")
        fast_port(ha_vm)
        before = engine(ha_vm)["fast"]["connections"]
        ha_vm.docker("ps")
        assert engine(ha_vm)["fast"]["connections"] > before
        assert len(relay_rules(ha_vm)) == 1  # adopted or replaced, never two
    finally:
        if launcher.agent_pid(ha_vm.name) is None:
            launcher.status(ha_vm.name, repair=True)
