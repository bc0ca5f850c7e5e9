"""Embedded DNS and isolation between networks, on real namespaces, veths and nftables (support/netguest)."""

import socket
import struct

import pytest
from support.netguest import dns_query, dns_query_tcp, net_env, serve_echo, tcp_echo

from pymachine_agent.network import EndpointConfig, EndpointSettings

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def env(tmp_path):
    with net_env(tmp_path) as e:
        yield e


def test_two_containers_on_a_user_network_talk_by_name_and_alias(env):
    env.mgr.create_network("front")
    web, client = env.container(), env.container()
    iweb = env.mgr.attach(
        A,
        web.pid,
        EndpointConfig(name="web", network_mode="front", networks={"front": EndpointSettings(["www"])}),
    )
    iclient = env.mgr.attach(B, client.pid, EndpointConfig(name="client", network_mode="front"))
    web_ip = iweb.attachments[0].ip
    assert iclient.resolv_conf.splitlines()[0] == "nameserver 127.0.0.11"
    for name in ("web", "WWW", "web.front", A[:12]):
        assert client.run(lambda n=name: dns_query(n)) == (0, [web_ip])
    assert web.run(lambda: dns_query("client")) == (0, [iclient.attachments[0].ip])
    serve_echo(web, "tcp", 80)
    assert client.run(lambda: tcp_echo(web_ip, 80, b"hello")) == b"hello"


def test_embedded_dns_forwards_other_names_to_the_guest_resolver(env):
    env.mgr.create_network("front")
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="solo", network_mode="front"))
    assert c.run(lambda: dns_query("example.test")) == (0, ["10.9.9.9"])
    assert c.run(lambda: dns_query("missing.test"))[0] == 3  # NXDOMAIN relayed from upstream
    assert "example.test" in env.upstream.asked
    # and over TCP, which resolvers fall back to for long answers
    assert c.run(lambda: dns_query_tcp("solo")).endswith(
        socket.inet_aton(env.mgr.endpoint(A).attachments[0].ip)
    )


def test_containers_keep_port_53_free_for_their_own_servers(env):
    """The embedded DNS must not occupy 0.0.0.0:53 inside the container (a dnsmasq container binds it)."""
    env.mgr.create_network("front")
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="dnsmasq", network_mode="front"))
    serve_echo(c, "udp", 53)
    serve_echo(c, "tcp", 53)
    assert c.run(lambda: dns_query("dnsmasq")) == (0, [env.mgr.endpoint(A).attachments[0].ip])


def test_user_networks_are_isolated(env):
    env.mgr.create_network("red")
    env.mgr.create_network("blue")
    r, b = env.container(), env.container()
    ir = env.mgr.attach(A, r.pid, EndpointConfig(name="redbox", network_mode="red"))
    ib = env.mgr.attach(B, b.pid, EndpointConfig(name="bluebox", network_mode="blue"))
    serve_echo(b, "tcp", 80)
    serve_echo(r, "tcp", 80)
    assert r.run(lambda: dns_query("bluebox"))[0] == 3  # not ours, and upstream does not know it either
    assert b.run(lambda: dns_query("redbox"))[0] == 3
    with pytest.raises(OSError):  # dropped in forward: the connect times out
        r.run(lambda: tcp_echo(ib.attachments[0].ip, 80, timeout=1.5))
    with pytest.raises(OSError):
        b.run(lambda: tcp_echo(ir.attachments[0].ip, 80, timeout=1.5))
    # each still reaches its own gateway side, so the failure above is isolation, not a broken endpoint
    assert r.run(lambda: _can_reach_gateway(ir.attachments[0].gateway))


def _can_reach_gateway(gateway: str) -> bool:
    """An ICMP echo to the gateway is answered (the guest's guard drops new TCP/UDP from bridges, but lets
    `ping` through, as Docker does); a timeout (OSError) would fail the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(2)
        total = sum(struct.unpack("!4H", struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1)))
        checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
        s.sendto(struct.pack("!BBHHH", 8, 0, checksum, 0x4242, 1), (gateway, 0))
        while True:
            reply, (source, _) = s.recvfrom(1024)
            if source == gateway and reply[20] == 0:  # echo reply (after the 20-byte IP header)
                return True


def test_default_bridge_has_no_name_resolution_but_ip_traffic_works(env):
    one, two = env.container(), env.container()
    i1 = env.mgr.attach(A, one.pid, EndpointConfig(name="one"))
    i2 = env.mgr.attach(B, two.pid, EndpointConfig(name="two", network_mode="default"))
    assert "127.0.0.11" not in i1.resolv_conf
    assert i1.resolv_conf.splitlines() == ["nameserver 10.0.2.3", "search guest.internal"]
    assert env.mgr.dns.containers() == []
    with pytest.raises(OSError):  # nobody answers on 127.0.0.11 in a default-bridge container
        one.run(lambda: dns_query("two", timeout=1))
    serve_echo(two, "tcp", 80)
    assert one.run(lambda: tcp_echo(i2.attachments[0].ip, 80)) == b"ping"
    assert i1.attachments[0].network_name == "bridge" and i1.attachments[0].ip.startswith("10.200.0.")


def test_dns_answers_the_names_of_a_container_on_two_networks_per_network(env):
    env.mgr.create_network("front")
    env.mgr.create_network("back")
    api, db, edge = env.container(), env.container(), env.container()
    env.mgr.attach(
        A, api.pid, EndpointConfig(name="api", network_mode="front", networks={"back": EndpointSettings()})
    )
    idb = env.mgr.attach(B, db.pid, EndpointConfig(name="db", network_mode="back"))
    iedge = env.mgr.attach(C, edge.pid, EndpointConfig(name="edge", network_mode="front"))
    iapi = env.mgr.endpoint(A)
    assert [a.network_name for a in iapi.attachments] == ["front", "back"]
    assert api.run(lambda: dns_query("db")) == (0, [idb.attachments[0].ip])
    assert api.run(lambda: dns_query("edge")) == (0, [iedge.attachments[0].ip])
    assert edge.run(lambda: dns_query("db"))[0] == 3
    assert edge.run(lambda: dns_query("api")) == (0, [iapi.attachments[0].ip])
    assert db.run(lambda: dns_query("api")) == (0, [iapi.attachments[1].ip])


def test_dns_option_on_a_user_network_picks_the_forwarders(env):
    """`--dns` on a user network: resolv.conf still says 127.0.0.11, but unknown names go to those servers."""
    from support.netguest import FakeUpstream

    own = FakeUpstream({"corp.test": "10.7.7.7"})
    try:
        env.mgr.create_network("front")
        a, b = env.container(), env.container()
        ia = env.mgr.attach(A, a.pid, EndpointConfig(name="a", network_mode="front", dns=[own.address]))
        env.mgr.attach(B, b.pid, EndpointConfig(name="b", network_mode="front"))
        assert ia.resolv_conf.startswith("nameserver 127.0.0.11\n")
        assert a.run(lambda: dns_query("corp.test")) == (0, ["10.7.7.7"])
        assert b.run(lambda: dns_query("corp.test"))[0] == 3  # the guest's resolver does not know it
        assert a.run(lambda: dns_query("b"))[1]  # container names still come from the embedded records
        assert own.asked == ["corp.test"]
    finally:
        own.close()
