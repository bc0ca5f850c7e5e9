"""Network CRUD in Docker's shapes, connect/disconnect on a running container, modes, -P, outbound NAT."""

import socket
import threading

import pytest
from support.netguest import dns_query, net_env, serve_echo, start_container, tcp_echo

from pymachine_agent.network import (
    ConflictError,
    EndpointConfig,
    EndpointSettings,
    ForbiddenError,
    InvalidParameterError,
    NotFoundError,
    PortSpec,
    plumbing,
)
from pymachine_agent.network.netlink import Netlink
from pymachine_agent.network.netns import netns_of, run_in_netns

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def env(tmp_path):
    with net_env(tmp_path) as e:
        yield e


def test_builtin_networks_and_crud_shapes(env):
    names = [n["Name"] for n in env.mgr.list_networks()]
    assert names[:3] == ["bridge", "host", "none"] or sorted(names) == ["bridge", "host", "none"]
    bridge = env.mgr.inspect_network("bridge")
    assert bridge["Driver"] == "bridge" and bridge["IPAM"]["Config"] == [
        {"Subnet": "10.200.0.0/24", "Gateway": "10.200.0.1"}
    ]
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    assert not any(k.startswith("_") for k in bridge)

    created = env.mgr.create_network(
        "app", subnet="10.200.99.0/24", gateway="10.200.99.254", labels={"tier": "x"}
    )
    assert set(created) == {"Id", "Warning"} and len(created["Id"]) == 64
    net = env.mgr.inspect_network(created["Id"][:10])
    assert net["Name"] == "app" and net["IPAM"]["Config"][0]["Gateway"] == "10.200.99.254"
    assert env.mgr.inspect_network("app")["Id"] == created["Id"]
    auto = env.mgr.inspect_network(env.mgr.create_network("auto")["Id"])
    assert auto["IPAM"]["Config"][0]["Subnet"] == "10.200.64.0/24"

    assert [n["Name"] for n in env.mgr.list_networks({"type": ["custom"]})] == ["app", "auto"]
    assert [n["Name"] for n in env.mgr.list_networks({"label": ["tier=x"]})] == ["app"]
    assert [n["Name"] for n in env.mgr.list_networks({"name": ["aut"]})] == ["auto"]

    with pytest.raises(ConflictError, match="already exists"):
        env.mgr.create_network("app")
    with pytest.raises(ConflictError, match="overlaps"):
        env.mgr.create_network("clash", subnet="10.200.99.128/25")
    with pytest.raises(InvalidParameterError):
        env.mgr.create_network("badgw", subnet="10.200.98.0/24", gateway="10.200.97.1")
    with pytest.raises(InvalidParameterError):
        env.mgr.create_network("over", driver="overlay")
    with pytest.raises(ForbiddenError):
        env.mgr.remove_network("bridge")
    with pytest.raises(NotFoundError):
        env.mgr.inspect_network("nope")

    c = env.container()
    info = env.mgr.attach(A, c.pid, EndpointConfig(name="member", network_mode="app"))
    members = env.mgr.inspect_network("app")["Containers"]
    assert members == {
        A: {
            "Name": "member",
            "EndpointID": info.attachments[0].endpoint_id,
            "MacAddress": info.attachments[0].mac,
            "IPv4Address": f"{info.attachments[0].ip}/24",
            "IPv6Address": "",
        }
    }
    with pytest.raises(ConflictError, match="active endpoints"):
        env.mgr.remove_network("app")
    assert env.mgr.prune_networks() == {"NetworksDeleted": ["auto"]}
    env.mgr.detach(A)
    env.mgr.remove_network("app")
    assert len(plumbing.links_with_prefix(env.names["bridge_prefix"])) == 0


def test_connect_and_disconnect_a_running_container(env):
    env.mgr.create_network("side")
    c, peer = env.container(), env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="main"))
    ipeer = env.mgr.attach(B, peer.pid, EndpointConfig(name="peer", network_mode="side"))
    env.mgr.connect("side", A, EndpointSettings(aliases=["mainalias"]))
    info = env.mgr.endpoint(A)
    assert [(a.network_name, a.ifname) for a in info.attachments] == [("bridge", "eth0"), ("side", "eth1")]
    assert sorted(plumbing.container_ifnames(c.pid)) == ["eth0", "eth1", "lo"]
    assert c.run(lambda: dns_query("peer")) == (0, [ipeer.attachments[0].ip])
    assert peer.run(lambda: dns_query("mainalias")) == (0, [info.attachments[1].ip])
    serve_echo(peer, "tcp", 80)
    assert c.run(lambda: tcp_echo(ipeer.attachments[0].ip, 80)) == b"ping"
    with pytest.raises(ConflictError):
        env.mgr.connect("side", A)
    env.mgr.disconnect("side", A)
    assert sorted(plumbing.container_ifnames(c.pid)) == ["eth0", "lo"]
    assert peer.run(lambda: dns_query("mainalias"))[0] == 3
    with pytest.raises(InvalidParameterError, match="not connected"):
        env.mgr.disconnect("side", A)
    with pytest.raises(ForbiddenError):
        env.mgr.connect("host", A)


def test_none_host_and_container_modes(env):
    lonely, main, sidecar, hosty = env.container(), env.container(), env.container(), env.container()
    inone = env.mgr.attach(A, lonely.pid, EndpointConfig(name="lonely", network_mode="none", hostname="solo"))
    assert plumbing.container_ifnames(lonely.pid) == ["lo"]
    assert inone.attachments == [] and "solo" in inone.hosts
    assert run_in_netns(netns_of(lonely.pid), lambda: _lo_is_up())

    imain = env.mgr.attach(B, main.pid, EndpointConfig(name="main", ports=[PortSpec(80, "tcp", 8080)]))
    path = env.mgr.netns_path_for("container:main")
    assert path == netns_of(main.pid)
    assert env.mgr.netns_path_for("bridge") is None
    # the runtime would start the sidecar inside `path`; the hook then mirrors main's files, plugs nothing
    iside = env.mgr.attach(C, sidecar.pid, EndpointConfig(name="side", network_mode=f"container:{B[:6]}"))
    assert iside.mode == f"container:{B}" and iside.netns_path == path and iside.hosts == imain.hosts
    assert env.counts()["veths"] == 1
    env.mgr.detach(C)  # leaves main's wiring alone
    assert env.counts()["veths"] == 1 and env.mgr.published_ports()[0].container_id == B
    with pytest.raises(NotFoundError):
        env.mgr.netns_path_for("container:ghost")

    ihost = env.mgr.attach(
        "d" * 64, hosty.pid, EndpointConfig(name="h", network_mode="host", ports=[PortSpec(1)])
    )
    assert ihost.mode == "host" and ihost.ports == [] and ihost.attachments == []


def _lo_is_up() -> bool:
    with Netlink() as nl:
        return nl.link("lo").up


def test_publish_all_hosts_files_and_etc_writing(env, tmp_path):
    c = env.container()
    config = EndpointConfig(
        name="web",
        hostname="web1",
        domainname="example.org",
        ports=[PortSpec(80, "tcp", 8080)],
        publish_all=True,
        exposed=["80/tcp", "443/tcp", "53/udp"],
        extra_hosts=["db:10.1.2.3", "gw:host-gateway"],
        dns=["10.0.2.99"],
        dns_search=["corp.example"],
    )
    info = env.mgr.attach(A, c.pid, config)
    assert sorted((p.container_port, p.proto) for p in info.ports) == [(53, "udp"), (80, "tcp"), (443, "tcp")]
    assert [p.host_port for p in info.ports if p.container_port == 80] == [8080]
    assert f"{info.attachments[0].ip}\tweb1.example.org web1\n" in info.hosts
    assert "10.1.2.3\tdb\n" in info.hosts and "10.200.0.1\tgw\n" in info.hosts
    assert info.resolv_conf == "nameserver 10.0.2.99\nsearch corp.example\n"
    files = {t: tmp_path / t.rsplit("/", 1)[1] for t in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")}
    for f in files.values():
        f.write_text("old")
    inode = files["/etc/hosts"].stat().st_ino
    info.write_etc_files({t: str(f) for t, f in files.items()})
    assert files["/etc/hostname"].read_text() == "web1\n"
    assert files["/etc/hosts"].read_text() == info.hosts
    assert files["/etc/hosts"].stat().st_ino == inode  # in place: a bind mount keeps seeing the new content


def test_outbound_traffic_is_masqueraded(env):
    """A container reaches a server beyond the guest; the server sees the guest's uplink address."""
    world = start_container()
    env.containers.append(world)
    with Netlink() as nl:
        nl.add_veth("uplink0", "eth0", peer_netns_pid=world.pid)
        index = nl.index("uplink0")
        nl.add_address(index, "10.250.0.1", 24)
        nl.set_link(index, up=True)

    def world_side() -> socket.socket:
        with Netlink() as nl:
            nl.set_link(nl.index("lo"), up=True)
            nl.add_address(nl.index("eth0"), "10.250.0.2", 24)
            nl.set_link(nl.index("eth0"), up=True)
            # a way back to every container subnet: only our rules (masquerade, internal drop) decide
            nl.add_route("0.0.0.0/0", gateway="10.250.0.1")
        s = socket.socket()
        s.bind(("10.250.0.2", 7))
        s.listen()
        return s

    listener = world.run(world_side)
    world.servers.append(listener)
    seen = []

    def serve() -> None:
        conn, peer = listener.accept()
        seen.append(peer[0])
        conn.sendall(b"hi")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = env.container()
    info = env.mgr.attach(A, c.pid, EndpointConfig(name="out"))

    def fetch() -> bytes:
        with socket.create_connection(("10.250.0.2", 7), timeout=5) as s:
            return s.recv(10)

    assert c.run(fetch) == b"hi"
    t.join(5)
    assert seen == ["10.250.0.1"] and info.attachments[0].ip != "10.250.0.1"
    # an --internal network has no way out, but its members still talk to each other
    env.mgr.create_network("sealed", internal=True)
    inside, peer = env.container(), env.container()
    env.mgr.attach(B, inside.pid, EndpointConfig(name="inside", network_mode="sealed"))
    ipeer = env.mgr.attach(C, peer.pid, EndpointConfig(name="peer", network_mode="sealed"))
    with pytest.raises(OSError):
        inside.run(lambda: socket.create_connection(("10.250.0.2", 7), timeout=1.5))
    serve_echo(peer, "tcp", 80)
    assert inside.run(lambda: tcp_echo(ipeer.attachments[0].ip, 80)) == b"ping"
