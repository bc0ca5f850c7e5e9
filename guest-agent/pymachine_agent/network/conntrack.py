"""Forget conntrack entries of a removed endpoint (ctnetlink over NETLINK_NETFILTER, no `conntrack` tool).

Why: a UDP flow keeps its conntrack entry, and so its DNAT target, as long as packets keep coming. After a
container is replaced, a client still sending to the published port would keep hitting the old address.
Docker flushes these too.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from .netlink import (
    _NLMSGHDR,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    _parse_attrs,
)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP = 1
CTA_IP_V4_SRC = 1
_NFGENMSG = struct.Struct("=BBH")


def _msg_type(cmd: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | cmd


def _recv_all(sock: socket.socket, seq: int) -> list[bytes]:
    bodies = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + _NLMSGHDR.size <= len(data):
            length, rtype, _flags, rseq, _ = _NLMSGHDR.unpack_from(data, off)
            body = data[off + _NLMSGHDR.size : off + length]
            off += (length + 3) & ~3
            if rseq != seq:
                continue
            if rtype == NLMSG_DONE:
                return bodies
            if rtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0]
                if code:
                    raise OSError(code, "ctnetlink request failed")
                return bodies
            bodies.append(body)


def _reply_source(body: bytes) -> str | None:
    attrs = _parse_attrs(body[_NFGENMSG.size :])
    reply = attrs.get(CTA_TUPLE_REPLY)
    if reply is None:
        return None
    ip = _parse_attrs(_parse_attrs(reply).get(CTA_TUPLE_IP, b"")).get(CTA_IP_V4_SRC)
    return str(ipaddress.IPv4Address(ip)) if ip and len(ip) == 4 else None


def _orig_attr(body: bytes) -> bytes | None:
    """The raw CTA_TUPLE_ORIG attribute (header included), to name the entry back to the kernel."""
    data, off = body[_NFGENMSG.size :], 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            return None
        if kind & 0x7FFF == CTA_TUPLE_ORIG:
            return data[off : off + length]
        off += (length + 3) & ~3
    return None


def forget_address(ip: str) -> int:
    """Delete every IPv4 conntrack entry whose reply comes from `ip` (flows DNATed to, or opened by, that
    container). Returns how many went. Runs in the caller thread's network namespace."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        header = _NFGENMSG.pack(socket.AF_INET, 0, 0)
        sock.send(
            _NLMSGHDR.pack(
                _NLMSGHDR.size + len(header), _msg_type(IPCTNL_MSG_CT_GET), NLM_F_REQUEST | NLM_F_DUMP, 1, 0
            )
            + header
        )
        doomed = [
            orig for body in _recv_all(sock, 1) if _reply_source(body) == ip and (orig := _orig_attr(body))
        ]
        gone = 0
        for seq, orig in enumerate(doomed, start=2):
            payload = header + orig
            sock.send(
                _NLMSGHDR.pack(
                    _NLMSGHDR.size + len(payload),
                    _msg_type(IPCTNL_MSG_CT_DELETE),
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                    0,
                )
                + payload
            )
            try:
                _recv_all(sock, seq)
                gone += 1
            except OSError:
                continue  # expired meanwhile
        return gone
