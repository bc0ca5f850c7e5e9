"""Pure parts of the container→guest guard: the nftables input chain and the bridge-name check."""

from __future__ import annotations

import pytest

from pymachine_agent.network import nat, networks
from pymachine_agent.network.model import ConflictError, InvalidParameterError


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_guard_drops_new_traffic_from_every_bridge_to_the_guest() -> None:
    nets = [nat.BridgeNet("br0", "172.17.0.0/16"), nat.BridgeNet("br1", "10.1.0.0/24", internal=True)]
    lines = _lines(nat.render("pm", nets, [nat.Dnat("tcp", 8080, "172.17.0.2", 80)]))
    assert "type filter hook input priority filter; policy accept;" in lines
    assert 'iifname { "br0", "br1" } jump from_containers' in lines
    chain = lines[lines.index("chain from_containers {") :]
    assert chain[1] == "ct state established,related accept"
    assert chain[chain.index("drop") + 1] == "}"  # the last rule: nothing new gets past it
    assert not any("dport" in line for line in chain[: chain.index("drop")])  # DNAT'd ports use forward


def test_guard_opens_only_the_proxied_ports() -> None:
    text = nat.render("pm", [nat.BridgeNet("br0", "172.17.0.0/16")], [], [("tcp", 8080), ("udp", 5353)])
    lines = _lines(text)
    assert "tcp dport { 8080 } accept" in lines and "udp dport { 5353 } accept" in lines
    assert text.count("{") == text.count("}")


def test_no_bridge_no_guard() -> None:
    assert "from_containers" not in nat.render("pm", [], [])


@pytest.mark.parametrize("name", ["eth0", "lo", "pmv1234"])
def test_bridge_name_of_an_existing_interface_is_a_conflict(name: str) -> None:
    with pytest.raises(ConflictError, match=f"interface {name} already exists"):
        networks.check_bridge_name(name, [], ["lo", "eth0", "pymachine0", "pmv1234"])


def test_bridge_name_of_another_network_is_a_conflict() -> None:
    with pytest.raises(ConflictError, match="already used by network bridge"):
        networks.check_bridge_name("pymachine0", [{"Name": "bridge", "_bridge": "pymachine0"}], [])


@pytest.mark.parametrize("name", ["a" * 16, "a/b", "x y", "..", "a:1"])
def test_bridge_name_must_be_an_interface_name(name: str) -> None:
    with pytest.raises(InvalidParameterError):
        networks.check_bridge_name(name, [], [])


def test_a_new_bridge_name_is_fine() -> None:
    networks.check_bridge_name("br-mine", [{"Name": "bridge", "_bridge": "pymachine0"}], ["lo", "eth0"])
