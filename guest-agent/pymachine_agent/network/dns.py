"""Embedded DNS at 127.0.0.11 inside each container on a user network (Docker's behaviour).

Docker redirects 127.0.0.11:53 with iptables inside the container to a listener it opens there. We need no
redirect: a socket created by a thread that setns()'d into the container's namespace lives in that namespace,
so the agent binds 127.0.0.11:53 (UDP and TCP) there directly and serves all containers from one selector
thread. Names of containers (and aliases) on the asker's networks are answered from the agent's records;
everything else is forwarded to the guest's resolver.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence

from . import nat
from .netns import run_in_netns

DNS_IP = "127.0.0.11"
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_SERVFAIL, RCODE_NXDOMAIN = 2, 3
TTL = 600

# (container id, lowercase name without trailing dot) -> IPv4 addresses, or None when not ours
Resolver = Callable[[str, str], list[str] | None]


def parse_question(msg: bytes) -> tuple[int, str, int, int, int]:
    """(id, qname, qtype, qclass, end offset of the question) of a query; ValueError when malformed."""
    if len(msg) < 12:
        raise ValueError("short DNS message")
    qid, _flags, qdcount = struct.unpack_from("!HHH", msg)
    if qdcount != 1:
        raise ValueError("expected exactly one question")
    off, labels = 12, []
    while True:
        if off >= len(msg):
            raise ValueError("truncated name")
        length = msg[off]
        off += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in question")
        labels.append(msg[off : off + length].decode("ascii", "replace"))
        off += length
    if off + 4 > len(msg):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", msg, off)
    return qid, ".".join(labels), qtype, qclass, off + 4


def build_answer(query: bytes, qend: int, qtype: int, addresses: Sequence[str], rcode: int = 0) -> bytes:
    """A response to `query` carrying A records for `addresses` (only when the question asked for A)."""
    qid, flags = struct.unpack_from("!HH", query)
    answers = [a for a in addresses] if qtype == TYPE_A else []
    # QR, opcode copied, AA, RD copied, RA
    rflags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0)
    body = query[12:qend]
    for ip in answers:
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + socket.inet_aton(ip)
    return header + body


class DnsServer:
    """One thread serving every container's 127.0.0.11 listeners; forwards other names to `upstreams`."""

    def __init__(
        self,
        resolver: Resolver,
        upstreams: Sequence[tuple[str, int]],
        upstreams_for: Callable[[str], Sequence[tuple[str, int]] | None] | None = None,
    ) -> None:
        """`upstreams_for(container_id)` may name a container's own servers (`--dns`); None = `upstreams`."""
        self.resolver = resolver
        self.upstreams = list(upstreams)
        self.upstreams_for = upstreams_for
        self.selector = selectors.DefaultSelector()
        self.listeners: dict[str, list[socket.socket]] = {}
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="pymachine-dns", daemon=True)
        self.thread.start()

    def add(self, container_id: str, netns_path: str) -> None:
        """Open 127.0.0.11:53 UDP+TCP inside the container's namespace (idempotent)."""
        if container_id in self.listeners:
            return

        def open_sockets() -> list[socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            udp.bind((DNS_IP, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            tcp.bind((DNS_IP, 0))
            tcp.listen(16)
            # Port 53 stays free for the container's own servers (a 0.0.0.0:53 bind would clash with ours):
            # like Docker, listen on random ports and DNAT 127.0.0.11:53 to them inside the container.
            nat.dns_redirect(udp.getsockname()[1], tcp.getsockname()[1])
            return [udp, tcp]

        socks = run_in_netns(netns_path, open_sockets)
        with self.lock:
            self.listeners[container_id] = socks
            for s in socks:
                s.setblocking(False)
                self.selector.register(s, selectors.EVENT_READ, container_id)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # closed: nobody is selecting any more

    def remove(self, container_id: str) -> None:
        with self.lock:
            socks = self.listeners.pop(container_id, [])
            for s in socks:
                try:
                    self.selector.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
        self._wake()

    def containers(self) -> list[str]:
        with self.lock:
            return list(self.listeners)

    def close(self) -> None:
        if not self.running:
            return
        self.running = False
        self._wake()
        self.thread.join(timeout=5)
        for cid in list(self.listeners):
            self.remove(cid)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- serving -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while self.running:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    if sock.type == socket.SOCK_DGRAM:
                        query, peer = sock.recvfrom(4096)
                        reply = self.local_answer(key.data, query)
                        if reply is not None:
                            sock.sendto(reply, peer)
                        else:  # upstream can be slow: never stall the other containers' lookups
                            threading.Thread(
                                target=self._forward_udp, args=(key.data, sock, query, peer), daemon=True
                            ).start()
                    else:
                        conn, _ = sock.accept()
                        threading.Thread(target=self._serve_tcp, args=(key.data, conn), daemon=True).start()
                except OSError:
                    continue  # a listener closed under us, or the client went away

    def _serve_tcp(self, container_id: str, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    (length,) = struct.unpack("!H", head)
                    query = b""
                    while len(query) < length:
                        chunk = conn.recv(length - len(query))
                        if not chunk:
                            return
                        query += chunk
                    reply = self.answer(container_id, query, tcp=True)
                    if not reply:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def local_answer(self, container_id: str, query: bytes) -> bytes | None:
        """The reply for a name we own, b"" for a malformed query (dropped), None to forward upstream."""
        try:
            _, qname, qtype, qclass, qend = parse_question(query)
        except ValueError:
            return b""
        addresses = self.resolver(container_id, qname.lower().rstrip(".")) if qclass == CLASS_IN else None
        if addresses is not None:
            return build_answer(query, qend, qtype, addresses)
        return None

    def answer(self, container_id: str, query: bytes, tcp: bool = False) -> bytes | None:
        reply = self.local_answer(container_id, query)
        if reply is None:
            return self._forward(container_id, query, tcp)
        return reply or None

    def _forward_udp(
        self, container_id: str, sock: socket.socket, query: bytes, peer: tuple[str, int]
    ) -> None:
        try:
            sock.sendto(self._forward(container_id, query, tcp=False), peer)
        except OSError:
            pass  # the container's listener was closed meanwhile

    def _forward(self, container_id: str, query: bytes, tcp: bool) -> bytes:
        own = self.upstreams_for(container_id) if self.upstreams_for else None
        for host, port in own or self.upstreams:
            try:
                if tcp:
                    with socket.create_connection((host, port), timeout=3) as up:
                        up.sendall(struct.pack("!H", len(query)) + query)
                        (length,) = struct.unpack("!H", _recv_exact(up, 2))
                        return _recv_exact(up, length)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                    up.settimeout(3)
                    up.sendto(query, (host, port))
                    reply, _ = up.recvfrom(65535)
                    return reply
            except OSError:
                continue
        _, _, qtype, _, qend = parse_question(query)
        return build_answer(query, qend, qtype, [], rcode=RCODE_SERVFAIL)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("upstream closed")
        data += chunk
    return data
