"""The whole engine with the docker CLI, its networking played in a private "guest" network namespace:
user networks with names, isolation, the default bridge, published ports, and cleanup after rm and after an
agent kill -9 + restart."""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from support.agent import start_agent
from support.netguest import agent_in_private_guest, tcp_echo

from pymachine_agent.network import nat, plumbing

pytestmark = pytest.mark.skipif(not shutil.which("docker"), reason="the docker CLI is not installed")
BB = "pymachine/busybox"


def _net_names(agent) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    opts = getattr(agent, "network_options", None) or {}
    return opts.get("veth_prefix", "pmv"), opts.get("nft_table", "pymachine")


def _published_rules(table: str) -> int:
    return sum(1 for r in nat.rules(table) if r.startswith("published:"))


def _http_get(port: int, path: str) -> bytes:
    return tcp_echo("127.0.0.1", port, f"GET {path} HTTP/1.0\r\n\r\n".encode()).split(b"\r\n\r\n", 1)[1]


@pytest.fixture
def agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    with agent_in_private_guest(tmp_path / "agent") as a:
        yield a


def test_docker_cli_user_networks_ports_and_cleanup(agent) -> None:  # type: ignore[no-untyped-def]
    d = agent.docker
    veth_prefix, table = _net_names(agent)
    d("network", "create", "front")
    d("network", "create", "back")
    web = d(
        "run",
        "-d",
        "--network",
        "front",
        "--network-alias",
        "www",
        "--name",
        "web",
        "-p",
        "8080:80",
        BB,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ).stdout.strip()
    # by name and by alias, over the embedded DNS, from another container on the same network
    assert (
        d("run", "--rm", "--network", "front", BB, "wget", "-qO-", "http://web/hostname").stdout
        == web[:12] + "\n"
    )
    assert "Address: " in d("run", "--rm", "--network", "front", BB, "nslookup", "www").stdout
    resolv = d("run", "--rm", "--network", "front", BB, "cat", "/etc/resolv.conf").stdout
    assert resolv.startswith("nameserver 127.0.0.11\n")
    # another user network sees neither the name nor the address
    ip = json.loads(d("inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    assert d("run", "--rm", "--network", "back", BB, "nslookup", "web", check=False).returncode != 0
    assert (
        d(
            "run",
            "--rm",
            "--network",
            "back",
            BB,
            "wget",
            "-T",
            "2",
            "-qO-",
            f"http://{ip}/hostname",
            check=False,
        ).returncode
        != 0
    )
    # the default bridge has no name resolution
    assert d("run", "--rm", BB, "nslookup", "web", check=False).returncode != 0
    # the published port answers on the guest's 127.0.0.1
    assert _http_get(8080, "/hostname") == web[:12].encode() + b"\n"
    ports = json.loads(d("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    # a clash names the port
    clash = d("run", "-d", "-p", "8080:80", BB, "sleep", "60", check=False)
    assert clash.returncode != 0 and "8080" in clash.stderr
    eph = d("run", "-d", "-p", "80", BB, "httpd", "-f", "-p", "80", "-h", "/etc").stdout.strip()
    host_port = int(d("port", eph, "80/tcp").stdout.strip().rsplit(":", 1)[1])
    assert _http_get(host_port, "/hostname") == eph[:12].encode() + b"\n"
    assert len(plumbing.links_with_prefix(veth_prefix)) == 2 and _published_rules(table) == 2

    d("rm", "-f", web, eph)
    ids = d("ps", "-aq").stdout.split()
    if ids:
        d("rm", "-f", *ids)
    assert plumbing.links_with_prefix(veth_prefix) == []
    assert _published_rules(table) == 0
    d("network", "rm", "front", "back")


def test_agent_kill_and_restart_keeps_running_containers_wired(agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = agent.docker
    veth_prefix, table = _net_names(agent)
    d("network", "create", "front")
    keep = d(
        "run",
        "-d",
        "--network",
        "front",
        "--name",
        "keep",
        "-p",
        "8081:80",
        BB,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ).stdout.strip()
    gone = d(
        "run", "-d", "--network", "front", "--name", "gone", "-p", "8082:80", BB, "sleep", "600"
    ).stdout.strip()
    assert len(plumbing.links_with_prefix(veth_prefix)) == 2
    gone_pid = json.loads(d("inspect", gone).stdout)[0]["State"]["Pid"]

    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait()
    os.kill(gone_pid, signal.SIGKILL)  # a container dies while no agent watches
    time.sleep(0.5)
    restart = {"network_options": agent.network_options} if getattr(agent, "network_options", None) else {}
    again = start_agent(agent.state_dir.parent, **restart)
    try:
        assert (
            again.docker(
                "run", "--rm", "--network", "front", BB, "wget", "-qO-", "http://keep/hostname"
            ).stdout
            == keep[:12] + "\n"
        )
        assert _http_get(8081, "/hostname") == keep[:12].encode() + b"\n"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(plumbing.links_with_prefix(veth_prefix)) != 1:
            time.sleep(0.2)
        assert len(plumbing.links_with_prefix(veth_prefix)) == 1
        assert _published_rules(table) == 1
    finally:
        again.stop()
