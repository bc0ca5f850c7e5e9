"""A TCP SYN to the guest's 127.0.0.1, forged as raw Ethernet from inside a container's network namespace.

A default container has CAP_NET_RAW (Docker's default set), so it can put any frame on its veth: an IPv4
packet to 127.0.0.1 addressed to the bridge's MAC. The bridges carry route_localnet=1 (published ports on
127.0.0.1 need it), so without a guard the guest would deliver it to whatever listens on its loopback. A
SYN-ACK coming back proves the listener was reachable. Stdlib only: the vm tier runs this file in the guest.

    python3 forged_syn.py PID IFNAME SRC_IP DST_MAC PORT  ->  prints "reached" or "blocked"
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import struct
import sys
import time

ETH_P_IP, ETH_P_ARP, ETH_P_ALL = 0x0800, 0x0806, 0x0003
CLONE_NEWNET = 0x40000000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, sport: int, dport: int) -> bytes:
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + tcp


def arp_reply(request: bytes, own_mac: bytes, own_ip: str) -> bytes | None:
    """The answer to an ARP who-has for `own_ip`: the guest asks with 127.0.0.1 as its sender address, which
    the container's kernel ignores, so the attacker answers it (as any raw-socket program can)."""
    arp = request[14:42]
    if len(arp) < 28 or struct.unpack_from("!H", arp, 6)[0] != 1 or arp[24:28] != socket.inet_aton(own_ip):
        return None
    sender_mac, sender_ip = arp[8:14], arp[14:18]
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2) + own_mac + arp[24:28] + sender_mac + sender_ip
    return sender_mac + own_mac + struct.pack("!H", ETH_P_ARP) + body


def syn_ack_seen(ifname: str, src_ip: str, dst_mac: str, dst_ip: str, port: int, wait: float = 3.0) -> bool:
    """In the calling thread's network namespace: send the SYN out of `ifname`, watch for its SYN-ACK."""
    mac = bytes.fromhex(dst_mac.replace(":", ""))
    sport = random.randint(20000, 60000)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((ifname, ETH_P_ALL))
        own_mac = sock.getsockname()[4]
        sock.send(syn_frame(own_mac, mac, src_ip, dst_ip, sport, port))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                frame, addr = sock.recvfrom(2048)
            except TimeoutError:
                break
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            kind = struct.unpack_from("!H", frame, 12)[0]
            if kind == ETH_P_ARP:
                reply = arp_reply(frame, own_mac, src_ip)
                if reply:
                    sock.send(reply)
                continue
            ip = frame[14:]
            if kind != ETH_P_IP or len(ip) < 40 or ip[9] != socket.IPPROTO_TCP:
                continue
            if ip[12:16] != socket.inet_aton(dst_ip):
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            got_sport, got_dport = struct.unpack_from("!HH", tcp)
            if (got_sport, got_dport) == (port, sport) and tcp[13] & 0x12 == 0x12:
                return True
    return False


def main() -> None:
    pid, ifname, src_ip, dst_mac, port = sys.argv[1:6]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    print("reached" if syn_ack_seen(ifname, src_ip, dst_mac, "127.0.0.1", int(port)) else "blocked")


if __name__ == "__main__":
    main()
