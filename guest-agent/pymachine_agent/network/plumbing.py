"""Kernel plumbing for bridges and endpoints, on top of netlink.py and netns.py."""

from __future__ import annotations

import errno
import os

from .model import NetworkError
from .netlink import Netlink, NetlinkError
from .netns import netns_of, run_in_netns, write_sysctl


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge exists with a MAC address of its own, carries the gateway address, is up, and accepts
    DNATed 127.0.0.1 traffic."""
    with Netlink() as nl:
        link = nl.link(name)
        if link is not None and link.kind != "bridge":
            # never give the uplink, lo or a container's veth a gateway address (network records are checked
            # at create; this also covers records written by an older agent)
            raise NetworkError(f"interface {name} exists and is not a bridge; it is not pymachine's to use")
        if link is None:
            try:
                nl.add_bridge(name, mac=bridge_mac())
            except NetlinkError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        else:  # made by an older agent: pin the address it has now (containers know it as their gateway's)
            nl.set_link(link.index, mac=link.mac if _usable_mac(link.mac) else bridge_mac())
        index = nl.index(name)
        if not any(i == index and ip == gateway for i, ip, _ in nl.addresses()):
            nl.add_address(index, gateway, prefixlen)
        nl.set_link(index, up=True)
    # route_localnet: without it the kernel drops a packet whose source is 127.0.0.1 leaving via the bridge,
    # which is what a DNATed connection to 127.0.0.1:<published port> is.
    # The nftables guard (nat.py) drops what containers send to the guest's own addresses, 127/8 included.
    write_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    # Networks are IPv4 only: without IPv6 the bridge gets no link-local address through which a container
    # could reach a guest service listening on [::] (the guard is an IPv4 table).
    try:
        write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
    except FileNotFoundError:
        pass  # a kernel without IPv6


def bridge_mac() -> str:
    """A random locally administered unicast MAC, outside the 02:42 prefix of container addresses.

    Why the bridge needs one set at all: a Linux bridge whose address was never set takes the lowest MAC of
    its ports and changes it whenever that port leaves. A container stopping then changes the gateway's MAC
    under every other container on the network, whose neighbour caches keep the old one: their replies to
    anything routed (a published port's traffic, the guest) go to a MAC nobody has, and the connections of
    that moment hang until the cache entry expires (up to about a minute). Docker sets the bridge's MAC for
    the same reason. A set address is kept by the kernel whatever ports come and go."""
    while True:
        raw = bytearray(os.urandom(6))
        raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
        mac = ":".join(f"{b:02x}" for b in raw)
        if not mac.startswith("02:42:"):
            return mac


def _usable_mac(mac: str) -> bool:
    """A unicast, non-zero address (an empty bridge shows 00:00:00:00:00:00, which cannot be set)."""
    return len(mac) == 17 and mac != "00:00:00:00:00:00" and not int(mac[:2], 16) & 1


def delete_link(name: str) -> bool:
    with Netlink() as nl:
        return nl.delete_link_by_name(name)


def links_with_prefix(prefix: str) -> list[str]:
    with Netlink() as nl:
        return [link.name for link in nl.links() if link.name.startswith(prefix)]


def guest_routes() -> list[str]:
    with Netlink() as nl:
        return nl.routes()


def loopback_up(pid: int) -> None:
    def body() -> None:
        with Netlink() as nl:
            nl.set_link(nl.index("lo"), up=True)

    run_in_netns(netns_of(pid), body)


def plug(
    bridge: str,
    host_if: str,
    pid: int,
    ifname: str,
    ip: str,
    prefixlen: int,
    gateway: str,
    mac: str,
    default_route: bool,
    ipv6: tuple[str, int] | None = None,
) -> None:
    """A veth pair: `host_if` on `bridge` here, `ifname` (eth0..) born inside the netns of `pid` and
    configured there with its address (and the default route via the gateway for the first network), and
    its IPv6 address on a network with IPv6 (no IPv6 route: see ipam.py)."""
    with Netlink() as nl:
        master = nl.index(bridge)
        nl.add_veth(host_if, ifname, peer_netns_pid=pid, peer_mac=mac, master=master)
        index = nl.index(host_if)
        nl.set_hairpin(index)
        nl.set_link(index, up=True)

    def inside() -> None:
        with Netlink() as nl:
            nl.set_link(nl.index("lo"), up=True)
            index = nl.index(ifname)
            nl.add_address(index, ip, prefixlen)
            if ipv6:
                write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "0")
                nl.add_address(index, ipv6[0], ipv6[1])
            nl.set_link(index, up=True)
            if default_route:
                nl.add_route("0.0.0.0/0", gateway=gateway, oif=index)

    run_in_netns(netns_of(pid), inside)


def container_ifnames(pid: int) -> list[str]:
    def body() -> list[str]:
        with Netlink() as nl:
            return [link.name for link in nl.links()]

    return run_in_netns(netns_of(pid), body)
