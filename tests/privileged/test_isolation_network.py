"""What a container can reach of "the guest" (here: a private network namespace playing it, with the real
agent and real containers): no listener on the guest's 127.0.0.1, none on 0.0.0.0 through a gateway address,
and `com.docker.network.bridge.name` cannot take over an existing interface. What containers need (another
container, a published port, ping of the gateway) still works."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.netguest import agent_in_private_guest, tcp_echo

from pymachine_agent.network.netlink import Netlink

pytestmark = pytest.mark.skipif(not shutil.which("docker"), reason="the docker CLI is not installed")
BB = "pymachine/busybox"
FORGED_SYN = Path(__file__).resolve().parent.parent / "support" / "forged_syn.py"


@pytest.fixture
def agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    with agent_in_private_guest(tmp_path / "agent") as a:
        yield a


@contextlib.contextmanager
def listener(address: str) -> Iterator[socket.socket]:
    """A listener of "the guest" (this thread's namespace); non-blocking: accept() says if anyone came."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def was_reached(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def network(agent, name: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(agent.docker("network", "inspect", name).stdout)[0]


def gateway(agent, name: str) -> str:  # type: ignore[no-untyped-def]
    return network(agent, name)["IPAM"]["Config"][0]["Gateway"]


def nc(agent, net: str, host: str, port: int) -> int:  # type: ignore[no-untyped-def]
    """Exit status of a container's connection attempt (busybox nc, 3 s connect timeout)."""
    script = f"echo hello | nc -w 3 {host} {port}"
    return agent.docker("run", "--rm", "--network", net, BB, "sh", "-c", script, check=False).returncode


def test_no_listener_of_the_guest_is_reachable_through_a_gateway(agent) -> None:  # type: ignore[no-untyped-def]
    agent.docker("network", "create", "user1")
    with listener("0.0.0.0") as sock:
        port = sock.getsockname()[1]
        for net in ("bridge", "user1"):
            for target in (gateway(agent, "bridge"), gateway(agent, "user1")):
                assert nc(agent, net, target, port) != 0, f"{net} → {target}:{port}"
                assert not was_reached(sock), f"a container on {net} reached {target}:{port}"
        # the guest itself still reaches its listener (the guard is for traffic from bridges only)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            assert was_reached_soon(sock)


def was_reached_soon(sock: socket.socket) -> bool:
    sock.setblocking(True)
    sock.settimeout(5)
    try:
        sock.accept()[0].close()
        return True
    finally:
        sock.setblocking(False)


def test_a_forged_frame_to_127_0_0_1_gets_no_answer(agent) -> None:  # type: ignore[no-untyped-def]
    """The attack a default container can make with CAP_NET_RAW (see support/forged_syn.py)."""
    cid = agent.docker("run", "-d", BB, "sleep", "300").stdout.strip()
    info = json.loads(agent.docker("inspect", cid).stdout)[0]
    ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    bridge = network(agent, "bridge")["Options"]["com.docker.network.bridge.name"]
    with Netlink() as nl:
        link = nl.link(bridge)
        assert link is not None
        bridge_mac = link.mac
    with listener("127.0.0.1") as sock:
        port = sock.getsockname()[1]
        argv = [sys.executable, str(FORGED_SYN), str(info["State"]["Pid"]), "eth0", ip, bridge_mac, str(port)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        assert out == "blocked"
        assert not was_reached(sock)


def test_what_containers_need_still_works(agent) -> None:  # type: ignore[no-untyped-def]
    agent.docker("network", "create", "user2")
    web = "httpd -f -p 80 -h /etc"
    agent.docker(
        "run", "-d", "--name", "web", "--network", "user2", "-p", "127.0.0.1::80", BB, "sh", "-c", web
    )
    port = json.loads(agent.docker("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]["80/tcp"][0][
        "HostPort"
    ]
    reply = tcp_echo("127.0.0.1", int(port), b"GET /hostname HTTP/1.0\r\n\r\n")
    assert b" 200 " in reply.split(b"\r\n", 1)[0]  # a published port, from the guest's loopback
    got = agent.docker("run", "--rm", "--network", "user2", BB, "wget", "-qO-", "http://web/hostname").stdout
    assert got.strip()  # another container on the same network
    # a published port through the gateway address (DNAT, then the forward path)
    gw = gateway(agent, "bridge")
    assert agent.docker("run", "--rm", BB, "wget", "-qO-", f"http://{gw}:{port}/hostname").stdout.strip()
    assert agent.docker("run", "--rm", BB, "ping", "-c", "1", "-W", "3", gw).returncode == 0


def _addresses(name: str) -> list[tuple[str, int]]:
    with Netlink() as nl:
        index = nl.index(name)
        return sorted((ip, plen) for i, ip, plen in nl.addresses() if i == index)


@pytest.mark.parametrize("existing", ["lo", "tveth0", "own-bridge"])
def test_bridge_name_cannot_take_an_existing_interface(agent, existing: str) -> None:  # type: ignore[no-untyped-def]
    if existing == "tveth0":
        subprocess.run(["ip", "link", "add", existing, "type", "veth", "peer", "name", "tveth1"], check=True)
    if existing == "own-bridge":  # the default network's bridge
        existing = network(agent, "bridge")["Options"]["com.docker.network.bridge.name"]
    before = _addresses(existing)
    status, _, body = agent.request(
        "POST",
        "/networks/create",
        {"Name": "grab", "Driver": "bridge", "Options": {"com.docker.network.bridge.name": existing}},
    )
    assert status == 409, body
    assert existing.encode() in json.loads(body)["message"].encode()
    with Netlink() as nl:
        assert nl.link(existing) is not None  # neither deleted nor replaced
    assert _addresses(existing) == before
    assert "grab" not in agent.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
