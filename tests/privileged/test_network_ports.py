"""Published ports (DNAT and userland proxy), ephemeral ports, clashes and the port events."""

import socket

import pytest
from support.netguest import net_env, serve_echo, tcp_echo, udp_echo

from pymachine_agent.network import EndpointConfig, PortClashError, PortSpec
from pymachine_agent.network.ports import hold_port

A, B = "a" * 64, "b" * 64


@pytest.fixture(params=["dnat", "proxy"])
def env(request, tmp_path):
    with net_env(tmp_path, port_mode=request.param) as e:
        yield e


def test_published_tcp_and_udp_reach_the_container_on_loopback_and_guest_addresses(env):
    c = env.container()
    info = env.mgr.attach(
        A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080), PortSpec(53, "udp", 5353)])
    )
    serve_echo(c, "tcp", 80)
    serve_echo(c, "udp", 53)
    gateway = info.attachments[0].gateway  # a guest address other than loopback
    for host in ("127.0.0.1", gateway):
        assert tcp_echo(host, 8080, b"over tcp") == b"over tcp"
        assert udp_echo(host, 5353, b"over udp") == b"udp:over udp"
    assert env.events == [
        {
            "type": "port",
            "action": "add",
            "container": A,
            "proto": "tcp",
            "host_ip": "127.0.0.1",
            "host_port": 8080,
            "guest_port": 8080,
        },
        {
            "type": "port",
            "action": "add",
            "container": A,
            "proto": "udp",
            "host_ip": "127.0.0.1",
            "host_port": 5353,
            "guest_port": 5353,
        },
    ]
    assert info.network_settings()["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
    }
    env.mgr.detach(A)
    assert [e["action"] for e in env.events[2:]] == ["remove", "remove"]
    with pytest.raises(OSError):
        tcp_echo("127.0.0.1", 8080, timeout=1)


def test_ephemeral_host_ports_are_distinct_and_work(env):
    one, two = env.container(), env.container()
    i1 = env.mgr.attach(A, one.pid, EndpointConfig(name="one", ports=[PortSpec(80)]))
    i2 = env.mgr.attach(B, two.pid, EndpointConfig(name="two", ports=[PortSpec(80, host_ip="127.0.0.1")]))
    serve_echo(one, "tcp", 80)
    serve_echo(two, "tcp", 80)
    p1, p2 = i1.ports[0].host_port, i2.ports[0].host_port
    assert p1 > 0 and p2 > 0 and p1 != p2
    assert tcp_echo("127.0.0.1", p1, b"one") == b"one"
    assert tcp_echo("127.0.0.1", p2, b"two") == b"two"
    assert env.events[1]["host_port"] == p2 and env.events[1]["host_ip"] == "127.0.0.1"


def test_clash_with_a_published_port_names_the_port_and_leaves_nothing(env):
    one, two = env.container(), env.container()
    env.mgr.attach(A, one.pid, EndpointConfig(name="one", ports=[PortSpec(80, "tcp", 8080)]))
    before = env.counts()
    with pytest.raises(PortClashError, match="8080/tcp") as info:
        env.mgr.attach(B, two.pid, EndpointConfig(name="two", ports=[PortSpec(81, "tcp", 8080)]))
    assert info.value.host_port == 8080
    assert env.counts() == before
    assert env.mgr.endpoint(B) is None
    # the same number over UDP is a different port
    env.mgr.attach(B, two.pid, EndpointConfig(name="two", ports=[PortSpec(81, "udp", 8080)]))


def test_clash_with_a_process_bound_in_the_guest(env):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    c = env.container()
    try:
        with pytest.raises(PortClashError, match=f"{port}/tcp is already in use"):
            env.mgr.attach(A, c.pid, EndpointConfig(name="c", ports=[PortSpec(80, "tcp", port)]))
    finally:
        squatter.close()
    assert env.counts()["veths"] == 0


def test_a_refused_ack_fails_the_attach_and_unpublishes(env):
    c = env.container()

    def refuse_second(event):
        env.events.append(event)
        if event["action"] == "add" and event["proto"] == "udp":
            raise RuntimeError(f"host port 127.0.0.1:{event['host_port']} is already in use")

    env.mgr.on_port_event = refuse_second
    config = EndpointConfig(name="c", ports=[PortSpec(80, "tcp", 8080), PortSpec(53, "udp", 5353)])
    with pytest.raises(RuntimeError, match="5353 is already in use"):
        env.mgr.attach(A, c.pid, config)
    assert [(e["action"], e["proto"]) for e in env.events] == [
        ("add", "tcp"),
        ("add", "udp"),
        ("remove", "tcp"),
    ]
    assert env.counts() == {
        "veths": 0,
        "dnat_rules": 0,
        "dns_listeners": 0,
        "endpoint_records": 0,
        "published": 0,
    }


def test_containers_reach_published_ports_through_guest_addresses(env):
    """From the same network (needs the hairpin masquerade), from another network (DNATed traffic passes the
    isolation), and a container reaching its own published port (bridge hairpin mode)."""
    env.mgr.create_network("other")
    server, neighbour, stranger = env.container(), env.container(), env.container()
    info = env.mgr.attach(A, server.pid, EndpointConfig(name="srv", ports=[PortSpec(80, "tcp", 8080)]))
    ineigh = env.mgr.attach(B, neighbour.pid, EndpointConfig(name="neigh"))
    istr = env.mgr.attach("c" * 64, stranger.pid, EndpointConfig(name="str", network_mode="other"))
    serve_echo(server, "tcp", 80)
    guest_ip = info.attachments[0].gateway
    assert neighbour.run(lambda: tcp_echo(guest_ip, 8080, b"same net")) == b"same net"
    assert stranger.run(lambda: tcp_echo(istr.attachments[0].gateway, 8080, b"other net")) == b"other net"
    assert server.run(lambda: tcp_echo(guest_ip, 8080, b"myself")) == b"myself"
    # isolation still holds for anything not published
    serve_echo(neighbour, "tcp", 81)
    with pytest.raises(OSError):
        stranger.run(lambda: tcp_echo(ineigh.attachments[0].ip, 81, timeout=1.5))


def test_a_udp_client_moves_to_the_new_container_after_a_replacement(env):
    """A UDP flow's conntrack entry outlives its container unless we drop it: the client, still sending from
    the same source port, must reach the replacement and not the address's next owner."""
    old, squatter, new = env.container(), env.container(), env.container()
    iold = env.mgr.attach(A, old.pid, EndpointConfig(name="old", ports=[PortSpec(53, "udp", 5353)]))
    serve_echo(old, "udp", 53)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(3)
    try:
        client.sendto(b"one", ("127.0.0.1", 5353))
        assert client.recvfrom(100)[0] == b"udp:one"
        env.mgr.forget(A)
        isq = env.mgr.attach(B, squatter.pid, EndpointConfig(name="squatter"))
        assert isq.attachments[0].ip == iold.attachments[0].ip  # the old address has a new owner
        env.mgr.attach("c" * 64, new.pid, EndpointConfig(name="new", ports=[PortSpec(53, "udp", 5353)]))
        serve_echo(new, "udp", 53)
        client.sendto(b"two", ("127.0.0.1", 5353))
        assert client.recvfrom(100)[0] == b"udp:two"
    finally:
        client.close()


def test_hold_port_ephemeral_and_clash_with_a_bound_process():
    held = hold_port("tcp", 0)
    try:
        port = held.getsockname()[1]
        assert port > 0
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
        with pytest.raises(PortClashError, match=f"{port}/tcp is already in use"):
            hold_port("tcp", port)
    finally:
        held.close()
