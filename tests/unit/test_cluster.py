"""Clusters, the pure parts: the node plan, the private NIC on both drivers' command lines, the ports a
cluster node's dockerd publishes (hostagent/dockerd.py) and the image variant's cache keys."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from pymachine.hostvm import cluster, image
from pymachine.hostvm.domain import QEMU_NS, VMSpec, domain_xml
from pymachine.hostvm.drivers.qemu import qemu_argv
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.hostagent import dockerd, ports
from pymachine.images import CLUSTER_RECIPE, GUEST_RECIPE

SPEC = VMSpec(
    name="sw", cpus=1, memory_mib=1024, kernel="/k", initrd="/i", cmdline="quiet", disk="/d.qcow2",
    seed="/s.tar", console_log="/c.log", ssh_port=40022,
)  # fmt: skip


def test_plan_names_roles_addresses_and_one_private_wire() -> None:
    nodes = cluster.plan("sw", 3, 1, random.Random(1))
    assert cluster.node_names("sw", 3) == ["sw", "sw-2", "sw-3"]
    assert [n["role"] for n in nodes] == ["manager", "worker", "worker"]
    assert [n["address"] for n in nodes] == ["192.168.77.11/24", "192.168.77.12/24", "192.168.77.13/24"]
    assert len({n["mcast"] for n in nodes}) == 1  # one multicast group: the cluster's own wire
    group, port = nodes[0]["mcast"].rsplit(":", 1)
    assert group.startswith("239.255.") and 20000 <= int(port) < 60000
    assert len({n["mac"] for n in nodes}) == 3
    assert [n["role"] for n in cluster.plan("q", 3, 3)] == ["manager"] * 3


@pytest.mark.parametrize(("nodes", "managers"), [(0, 1), (2, 0), (2, 3), (cluster.MAX_NODES + 1, 1)])
def test_plan_refuses_impossible_shapes(nodes: int, managers: int) -> None:
    with pytest.raises(UsageError):
        cluster.plan("sw", nodes, managers)


def test_private_nic_on_both_drivers_and_none_for_a_plain_machine() -> None:
    spec = replace(SPEC, private_mcast="239.255.1.2:40000", private_mac="52:54:00:aa:bb:01")
    netdev = "socket,id=net1,mcast=239.255.1.2:40000,localaddr=127.0.0.1"
    argv = qemu_argv(spec, "/p", "/q")
    assert argv[argv.index(netdev) - 1] == "-netdev"
    assert "virtio-net-pci,netdev=net1,mac=52:54:00:aa:bb:01,bus=pcie.0,addr=0x11" in argv
    args = [a.get("value") for a in ET.fromstring(domain_xml(spec)).iter(f"{{{QEMU_NS}}}arg")]
    assert netdev in args
    assert not any("net1" in a for a in qemu_argv(SPEC, "/p", "/q"))
    assert "net1" not in domain_xml(SPEC)


SERVICES = [
    {"ID": "s1", "Spec": {"Name": "web"}, "Endpoint": {"Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "host"},  # per container
        {"Protocol": "sctp", "TargetPort": 9, "PublishedPort": 9999, "PublishMode": "ingress"},
    ]}},
    {"ID": "s2", "Spec": {"Name": "worker"}, "Endpoint": {}},
]  # fmt: skip
CONTAINERS = [
    {"Id": "c" * 64, "Names": ["/db"], "Ports": [
        {"IP": "0.0.0.0", "PrivatePort": 5432, "PublicPort": 15432, "Type": "tcp"},
        {"PrivatePort": 6000, "Type": "tcp"},  # exposed, not published
    ]},
    {"Id": "d" * 64, "Names": ["/web.1.x"],
     "Ports": [{"PrivatePort": 81, "PublicPort": 8081, "Type": "tcp"}]},
]  # fmt: skip


def test_published_ports_from_services_and_containers() -> None:
    found = dockerd.published_ports(SERVICES, CONTAINERS)
    assert found == {
        ("tcp", 8080): "service web",
        ("udp", 5353): "service web",
        ("tcp", 15432): "container db",
        ("tcp", 8081): "container web.1.x",
    }


def test_a_worker_without_services_still_forwards_its_containers() -> None:
    # a worker answers /services with 503 and a message body
    found = dockerd.published_ports({"message": "This node is not a swarm manager."}, CONTAINERS)
    assert set(found) == {("tcp", 15432), ("tcp", 8081)}


def test_port_changes_drive_the_port_table() -> None:
    """The events dockerd.diff makes are valid guest port events: listeners open and close to match, on the
    host's loopback, at the published port on both sides (the routing mesh answers there in the guest)."""
    table = ports.PortTable()
    before = {("tcp", 8080): "service web"}
    after = {("tcp", 9090): "service api"}
    opened = [a for e in dockerd.diff({}, before) for a in table.apply(ports.parse_event(e))]
    assert opened == [ports.Open(ports.PortRule("tcp", "127.0.0.1", 8080, 8080, "service web"))]
    changed = [a for e in dockerd.diff(before, after) for a in table.apply(ports.parse_event(e))]
    assert [type(a).__name__ for a in changed] == ["Close", "Open"]
    assert set(table.rules) == {("tcp", "127.0.0.1", 9090)}
    assert dockerd.diff(after, dict(after)) == []


def test_dockerd_mode_is_read_from_the_machine_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.json"
    config.write_text('{"name": "m", "cluster": null}')
    assert not dockerd.is_dockerd_machine(config)
    config.write_text('{"name": "sw", "cluster": {"name": "sw", "role": "manager"}}')
    assert dockerd.is_dockerd_machine(config)
    assert not dockerd.is_dockerd_machine(tmp_path / "missing.json")


def test_the_cluster_image_has_its_own_cache_keys() -> None:
    assert image.recipe_hash(variant=CLUSTER_RECIPE) != image.recipe_hash()
    assert image.rootfs_hash(GUEST_RECIPE, CLUSTER_RECIPE) != image.rootfs_hash(GUEST_RECIPE)
    assert "docker.io" in (CLUSTER_RECIPE / "packages.txt").read_text().split()
