import ipaddress

import pytest

from pymachine_agent.network import ipam
from pymachine_agent.network.model import ConflictError, InvalidParameterError, NetworkError


def test_parse_subnet_rejects_host_bits_ipv6_and_tiny_nets():
    assert str(ipam.parse_subnet("10.200.1.0/24")) == "10.200.1.0/24"
    for bad in ("10.200.1.5/24", "fd00::/64", "10.0.0.0/31", "nonsense"):
        with pytest.raises(InvalidParameterError):
            ipam.parse_subnet(bad)


def test_gateway_is_first_host_and_must_be_inside():
    net = ipam.parse_subnet("172.17.0.0/16")
    assert ipam.default_gateway(net) == "172.17.0.1"
    assert ipam.check_gateway(net, "172.17.255.254") == "172.17.255.254"
    for bad in ("172.18.0.1", "172.17.0.0", "172.17.255.255", "x"):
        with pytest.raises(InvalidParameterError):
            ipam.check_gateway(net, bad)


def test_allocate_lowest_free_then_wanted():
    net = ipaddress.IPv4Network("10.200.3.0/29")
    used = {"10.200.3.1"}
    first = ipam.allocate(net, used)
    assert first == "10.200.3.2"
    used.add(first)
    assert ipam.allocate(net, used) == "10.200.3.3"
    assert ipam.allocate(net, used, wanted="10.200.3.6") == "10.200.3.6"
    with pytest.raises(ConflictError):
        ipam.allocate(net, used, wanted="10.200.3.2")
    with pytest.raises(InvalidParameterError):
        ipam.allocate(net, used, wanted="10.200.3.7")  # broadcast
    with pytest.raises(InvalidParameterError):
        ipam.allocate(net, used, wanted="10.200.4.2")


def test_allocate_exhaustion_is_an_error():
    net = ipaddress.IPv4Network("10.200.3.0/30")
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate(net, {"10.200.3.1", "10.200.3.2"})


def test_pick_subnet_skips_taken_and_guest_routes_but_not_default_route():
    pools = [("10.200.0.0/22", 24), ("10.201.0.0/16", 24)]
    taken = ["0.0.0.0/0", "10.200.0.0/24", "10.200.1.128/25"]
    assert ipam.pick_subnet(pools, taken) == "10.200.2.0/24"
    taken += ["10.200.2.0/23"]
    assert ipam.pick_subnet(pools, taken) == "10.201.0.0/24"
    with pytest.raises(NetworkError, match="pools"):
        ipam.pick_subnet([("10.200.0.0/24", 24)], ["10.200.0.0/16"])


def test_overlapping_names_the_clash():
    assert ipam.overlapping("10.0.2.0/24", ["172.17.0.0/16", "10.0.0.0/8"]) == "10.0.0.0/8"
    assert ipam.overlapping("10.0.2.0/24", ["10.0.3.0/24"]) is None


def test_mac_follows_docker_convention():
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"
