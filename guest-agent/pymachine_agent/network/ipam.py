"""Address management: subnets for networks, addresses for endpoints. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from .model import ConflictError, InvalidParameterError, NetworkError


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    """A strict IPv4 network ("10.200.1.0/24"); host bits set or IPv6 is an InvalidParameterError."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidParameterError(f"invalid subnet {subnet!r}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidParameterError(f"invalid subnet {subnet!r}: only IPv4 networks are supported")
    if net.prefixlen > 30:
        raise InvalidParameterError(f"invalid subnet {subnet!r}: too small for a gateway and one container")
    return net


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
