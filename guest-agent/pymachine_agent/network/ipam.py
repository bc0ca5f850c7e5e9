"""Address management: subnets for networks, addresses for endpoints. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from .model import ConflictError, InvalidParameterError, NetworkError


def _network(subnet: str, version: int, max_prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A strict network of that IP version with room for a gateway and one container."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidParameterError(f"invalid subnet {subnet!r}: {exc}") from None
    if net.version != version:
        raise InvalidParameterError(f"invalid subnet {subnet!r}: expected an IPv{version} network")
    if net.prefixlen > max_prefix:
        raise InvalidParameterError(f"invalid subnet {subnet!r}: too small for a gateway and one container")
    return net


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    """A strict IPv4 network ("10.200.1.0/24"); host bits set or IPv6 is an InvalidParameterError."""
    return _network(subnet, 4, 30)  # type: ignore[return-value]


def default_gateway(net: ipaddress.IPv4Network) -> str:
    """Docker's choice: the first host address."""
    return str(net.network_address + 1)


def check_gateway(net: ipaddress.IPv4Network, gateway: str) -> str:
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise InvalidParameterError(f"invalid gateway {gateway!r}") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise InvalidParameterError(f"gateway {gateway} is not a host address of subnet {net}")
    return str(gw)


def overlapping(subnet: str, others: Iterable[str]) -> str | None:
    """The first of `others` that overlaps `subnet`, or None. Default routes (/0) never count."""
    net = ipaddress.IPv4Network(subnet)
    for other in others:
        o = ipaddress.IPv4Network(other, strict=False)
        if o.prefixlen and net.overlaps(o):
            return other
    return None


def pick_subnet(pools: Sequence[tuple[str, int]], taken: Iterable[str]) -> str:
    """The first subnet of each pool's size, walking the pools in order, that overlaps nothing in `taken`
    (existing networks and the guest's own routes)."""
    taken = list(taken)
    for base, size in pools:
        pool = ipaddress.IPv4Network(base)
        for candidate in pool.subnets(new_prefix=size):
            if overlapping(str(candidate), taken) is None:
                return str(candidate)
    raise NetworkError("all predefined address pools have been fully subnetted: remove unused networks")


def allocate(net: ipaddress.IPv4Network, used: Iterable[str], wanted: str = "") -> str:
    """An address for a new endpoint: `wanted` if given (must be a free host address of `net`), else the
    lowest free host address. `used` includes the gateway."""
    used_set = {ipaddress.IPv4Address(u) for u in used}
    if wanted:
        try:
            addr = ipaddress.IPv4Address(wanted)
        except ValueError:
            raise InvalidParameterError(f"invalid IPv4 address {wanted!r}") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise InvalidParameterError(f"address {wanted} is not in subnet {net}")
        if addr in used_set:
            raise ConflictError(f"address {wanted} is already in use on the network")
        return str(addr)
    for host in net.hosts():
        if host not in used_set:
            return str(host)
    raise NetworkError(f"no free address left in subnet {net}")


def mac_for(ip: str) -> str:
    """Docker's deterministic MAC: 02:42 followed by the IPv4 address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


# -- IPv6 -------------------------------------------------------------------------------------------------
# A network with IPv6 enabled gives its containers addresses of its IPv6 subnet on the same bridge. The guest
# itself takes no IPv6 address there (the bridge keeps disable_ipv6=1, see plumbing.ensure_bridge): containers
# of a network talk IPv6 to each other, and nothing of the guest is reachable over IPv6, which the IPv4-only
# guard (nat.py) could not cover. There is no IPv6 gateway and no IPv6 route out of the network.


def parse_subnet6(subnet: str) -> ipaddress.IPv6Network:
    return _network(subnet, 6, 124)  # type: ignore[return-value]


def ula_subnet(net_id: str) -> str:
    """A unique local /64 for a network created with IPv6 but no IPv6 subnet (fd + 40 bits of its id)."""
    return str(ipaddress.IPv6Network((int("fd" + net_id[:10], 16) << 80, 64)))


def overlapping6(subnet: str, others: Iterable[str]) -> str | None:
    net = ipaddress.IPv6Network(subnet)
    for other in others:
        if net.overlaps(ipaddress.IPv6Network(other, strict=False)):
            return other
    return None


def allocate6(net: ipaddress.IPv6Network, used: Iterable[str], wanted: str = "") -> str:
    """`wanted` (a free address of `net`), else the lowest free one from ::2 (::1 is kept as Docker's
    gateway address, though nothing answers there)."""
    used_set = {ipaddress.IPv6Address(u) for u in used} | {net.network_address + 1}
    if wanted:
        try:
            addr = ipaddress.IPv6Address(wanted)
        except ValueError:
            raise InvalidParameterError(f"invalid IPv6 address {wanted!r}") from None
        if addr not in net or addr == net.network_address:
            raise InvalidParameterError(f"address {wanted} is not in subnet {net}")
        if addr in used_set:
            raise ConflictError(f"address {wanted} is already in use on the network")
        return str(addr)
    addr = net.network_address + 2
    while addr in net:
        if addr not in used_set:
            return str(addr)
        addr += 1
    raise NetworkError(f"no free address left in subnet {net}")
