"""Raw rtnetlink over an AF_NETLINK socket: links (bridge, veth), addresses, routes.

Why not `ip`: one netlink round trip is ~30x cheaper than spawning `ip` (bench/bench_network_netlink.py), and
an endpoint takes ~8 steps. Why not pyroute2: it is not in the guest; the agent is stdlib only.

A socket talks to the network namespace of the thread that created it, so `netns.run_in_netns` + `Netlink()`
configures a container's namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 1 << 15

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_PID, IFLA_NET_NS_FD = 12, 18, 19, 28
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 3, 0, 253, 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request (errno and strerror as usual, plus what was asked)."""


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    kind: str
    master: int
    mac: str

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def _attr(kind: int, data: bytes) -> bytes:
    raw = _RTA.pack(_RTA.size + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _nested(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _parse_attrs(data: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    off = 0
    while off + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, off)
        if length < _RTA.size:
            break
        attrs[kind & ~NLA_F_NESTED] = data[off + _RTA.size : off + length]
        off += (length + 3) & ~3
    return attrs


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


class Netlink:
    """One rtnetlink socket in the caller thread's network namespace. Use as a context manager."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes, what: str = "") -> list[tuple[int, bytes]]:
        """Send one message; return the (type, body) replies of a dump, or [] after an ACK."""
        self.seq += 1
        seq = self.seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags | NLM_F_REQUEST, seq, 0)
        self.sock.send(header + payload)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, rtype, rflags, rseq, _ = _NLMSGHDR.unpack_from(data, off)
                body = data[off + _NLMSGHDR.size : off + length]
                off += (length + 3) & ~3
                if rseq != seq:
                    continue
                if rtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise NetlinkError(code, f"{os.strerror(code)}: {what or msg_type}")
                    return replies
                if rtype == NLMSG_DONE:
                    return replies
                replies.append((rtype, body))
                if not rflags & NLM_F_MULTI:
                    return replies

    # --- links ---------------------------------------------------------------------------------------------

    def _link_msg(self, index: int = 0, flags: int = 0, change: int = 0) -> bytes:
        return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)

    def add_bridge(self, name: str, mtu: int = 0, mac: str = "") -> None:
        attrs = _str(IFLA_IFNAME, name) + _nested(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
        if mac:
            attrs += _attr(IFLA_ADDRESS, _mac_bytes(mac))
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        self.request(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            self._link_msg() + attrs,
            f"create bridge {name}",
        )

    def add_veth(
        self, name: str, peer: str, peer_netns_pid: int = 0, peer_mac: str = "", master: int = 0, mtu: int = 0
    ) -> None:
        """A veth pair; the peer is born inside the namespace of `peer_netns_pid` (when given) so it never
        appears in ours, and `name` is enslaved to bridge index `master`."""
        peer_attrs = _str(IFLA_IFNAME, peer)
        if peer_netns_pid:
            peer_attrs += _u32(IFLA_NET_NS_PID, peer_netns_pid)
        if peer_mac:
            peer_attrs += _attr(IFLA_ADDRESS, _mac_bytes(peer_mac))
        if mtu:
            peer_attrs += _u32(IFLA_MTU, mtu)
        info = _nested(
            IFLA_LINKINFO,
            _str(IFLA_INFO_KIND, "veth"),
            _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, self._link_msg() + peer_attrs)),
        )
        attrs = _str(IFLA_IFNAME, name) + info
        if master:
            attrs += _u32(IFLA_MASTER, master)
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        self.request(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            self._link_msg() + attrs,
            f"create veth {name}",
        )

    def set_link(
        self,
        index: int,
        up: bool | None = None,
        master: int | None = None,
        netns_pid: int = 0,
        netns_fd: int = -1,
        name: str = "",
        mac: str = "",
    ) -> None:
        flags = change = 0
        if up is not None:
            change, flags = IFF_UP, IFF_UP if up else 0
        attrs = b""
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if netns_pid:
            attrs += _u32(IFLA_NET_NS_PID, netns_pid)
        if netns_fd >= 0:
            attrs += _u32(IFLA_NET_NS_FD, netns_fd)
        if name:
            attrs += _str(IFLA_IFNAME, name)
        if mac:
            attrs += _attr(IFLA_ADDRESS, _mac_bytes(mac))
        self.request(
            RTM_NEWLINK, NLM_F_ACK, self._link_msg(index, flags, change) + attrs, f"set link {index}"
        )

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """Let the bridge send a frame back out of the port it came in on (a container reaching its own
        published port through a guest address)."""
        msg = _IFINFOMSG.pack(socket.AF_BRIDGE, 0, index, 0, 0)
        msg += _nested(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, bytes([1 if on else 0])))
        self.request(RTM_SETLINK, NLM_F_ACK, msg, f"hairpin on link {index}")

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, NLM_F_ACK, self._link_msg(index), f"delete link {index}")

    def delete_link_by_name(self, name: str) -> bool:
        """Delete `name` if it exists; False when it did not."""
        try:
            self.request(RTM_DELLINK, NLM_F_ACK, self._link_msg() + _str(IFLA_IFNAME, name), f"delete {name}")
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def link(self, name: str) -> Link | None:
        try:
            replies = self.request(RTM_GETLINK, 0, self._link_msg() + _str(IFLA_IFNAME, name), f"get {name}")
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return _parse_link(replies[0][1]) if replies else None

    def links(self) -> list[Link]:
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, self._link_msg(), "list links")
        return [_parse_link(body) for rtype, body in replies if rtype == RTM_NEWLINK]

    def index(self, name: str) -> int:
        found = self.link(name)
        if found is None:
            raise NetlinkError(errno.ENODEV, f"no such interface: {name}")
        return found.index

    # --- addresses and routes ------------------------------------------------------------------------------

    def add_address(self, index: int, ip: str, prefixlen: int) -> None:
        if ":" in ip:  # IPv6, without duplicate address detection (the address is ours to give)
            packed = ipaddress.IPv6Address(ip).packed
            msg = _IFADDRMSG.pack(socket.AF_INET6, prefixlen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
            msg += _attr(IFA_ADDRESS, packed)
            self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, msg, f"add address {ip}")
            return
        iface = ipaddress.IPv4Interface(f"{ip}/{prefixlen}")
        attrs = _attr(IFA_LOCAL, iface.ip.packed) + _attr(IFA_ADDRESS, iface.ip.packed)
        if prefixlen < 31:
            attrs += _attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        msg = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + attrs
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, msg, f"add address {ip}")

    def addresses(self) -> list[tuple[int, str, int]]:
        """(ifindex, ip, prefixlen) of every IPv4 address."""
        replies = self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0), "addrs")
        out = []
        for rtype, body in replies:
            if rtype != RTM_NEWADDR:
                continue
            _, prefixlen, _, _, index = _IFADDRMSG.unpack_from(body)
            attrs = _parse_attrs(body[_IFADDRMSG.size :])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.append((index, str(ipaddress.IPv4Address(raw)), prefixlen))
        return out

    def add_route(self, dst: str, gateway: str = "", oif: int = 0) -> None:
        """A route in the main table: `dst` "0.0.0.0/0" with a gateway is the default route."""
        net = ipaddress.IPv4Network(dst)
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        msg = _RTMSG.pack(
            socket.AF_INET, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0
        )
        if net.prefixlen:
            msg += _attr(RTA_DST, net.network_address.packed)
        if gateway:
            msg += _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
        if oif:
            msg += _u32(RTA_OIF, oif)
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, msg, f"add route {dst}")

    def routes(self) -> list[str]:
        """Destinations ("10.0.2.0/24") of the main table's IPv4 routes."""
        msg = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for rtype, body in self.request(RTM_GETROUTE, NLM_F_DUMP, msg, "routes"):
            if rtype != RTM_NEWROUTE:
                continue
            _, dst_len, _, _, table, *_ = _RTMSG.unpack_from(body)
            if table != RT_TABLE_MAIN:
                continue
            raw = _parse_attrs(body[_RTMSG.size :]).get(RTA_DST, b"\0\0\0\0")
            out.append(f"{ipaddress.IPv4Address(raw)}/{dst_len}")
        return out


def _parse_link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    attrs = _parse_attrs(body[_IFINFOMSG.size :])
    kind = ""
    if IFLA_LINKINFO in attrs:
        kind = _parse_attrs(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
    master = struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0
    mac = ":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b""))
    return Link(index, attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(), flags, kind, master, mac)


def describe(link: Link) -> dict[str, Any]:
    return {"index": link.index, "name": link.name, "kind": link.kind, "up": link.up, "mac": link.mac}
