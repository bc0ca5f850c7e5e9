"""Privileged network tests play "the guest" in a private network namespace of the test thread.

The guest agent's networking rewrites sysctls (ip_forward), nftables and bridges of its namespace; on this
shared machine that must not be the host's. `private_guest()` moves only the pytest thread into a fresh
namespace (setns is per thread), so bridges, nft tables, 127.0.0.1 ports and sysctls are private to the test
and vanish with it. "Containers" are `unshare --net sleep` processes started from that thread: namespaces
nested in the guest.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymachine_agent.network.netlink import Netlink
from pymachine_agent.network.netns import CLONE_NEWNET, netns_of, own_netns_id, run_in_netns, setns

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def private_guest() -> Iterator[None]:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if _libc.unshare(CLONE_NEWNET) != 0:
        os.close(own)
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    try:
        with Netlink() as nl:
            nl.set_link(nl.index("lo"), up=True)
        yield
    finally:
        setns(own)
        os.close(own)


@contextlib.contextmanager
def agent_in_private_guest(base: Path) -> Iterator[Any]:
    """The real agent (busybox loaded) with a private namespace of this thread as its guest network."""
    from support.agent import start_agent

    with private_guest():
        agent = start_agent(base)
        try:
            agent.load_busybox()
            yield agent
        finally:
            agent.stop()


def unique_names() -> dict[str, str]:
    """Interface prefixes and the nft table name unique to this run (parallel helpers never clash)."""
    tag = uuid.uuid4().hex[:4]
    return {
        "default_bridge": f"t{tag}br0",
        "bridge_prefix": f"t{tag}b-",
        "veth_prefix": f"t{tag}v",
        "nft_table": f"pmtest_{tag}",
    }


@dataclass
class FakeContainer:
    """A process in its own network namespace, as the runtime would hand to `attach`."""

    proc: subprocess.Popen
    servers: list[socket.socket] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def netns(self) -> str:
        return netns_of(self.pid)

    def run(self, fn):  # type: ignore[no-untyped-def]
        return run_in_netns(self.netns, fn)

    def stop(self) -> None:
        for s in self.servers:
            s.close()
        self.proc.kill()
        self.proc.wait()


def start_container() -> FakeContainer:
    guest = own_netns_id()
    proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.stat(netns_of(proc.pid)).st_ino != guest:
                return FakeContainer(proc)
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("the fake container never got its own network namespace")


def _echo_tcp(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


def _echo_udp(sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(65536)
            sock.sendto(b"udp:" + data, peer)
        except OSError:
            return


def serve_echo(container: FakeContainer, proto: str, port: int) -> None:
    """An echo server inside the container's namespace (the socket lives there; a test thread serves it)."""

    def make() -> socket.socket:
        if proto == "tcp":
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(16)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))
        return s

    sock = container.run(make)
    container.servers.append(sock)
    threading.Thread(target=_echo_tcp if proto == "tcp" else _echo_udp, args=(sock,), daemon=True).start()


def tcp_echo(host: str, port: int, payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def udp_echo(host: str, port: int, payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, port))
        return s.recvfrom(65536)[0]


def dns_query(
    name: str, server: str = "127.0.0.11", port: int = 53, timeout: float = 3.0
) -> tuple[int, list[str]]:
    """(rcode, A addresses) for `name` asked over UDP."""
    qid = int.from_bytes(os.urandom(2), "big")
    question = (
        b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question, (server, port))
        reply = s.recvfrom(65535)[0]
    rid, flags, _, ancount, _, _ = struct.unpack_from("!HHHHHH", reply)
    assert rid == qid
    off = 12 + len(question)
    addrs = []
    for _ in range(ancount):
        off += 2 if reply[off] & 0xC0 else reply.index(b"\0", off) + 1 - off
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", reply, off)
        off += 10
        if rtype == 1:
            addrs.append(socket.inet_ntoa(reply[off : off + rdlen]))
        off += rdlen
    return flags & 0xF, addrs


class FakeUpstream:
    """The guest resolver's stand-in on the private guest's 127.0.0.1: `known` names, NXDOMAIN else."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.asked: list[str] = []
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from pymachine_agent.network.dns import build_answer, parse_question

        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if self.closing:
                return
            try:
                _, qname, qtype, _, qend = parse_question(query)
            except ValueError:
                # Not a DNS query: a UDP test's datagram to a port it found free for TCP, say. The real
                # upstream ignores it too; raising here would fail whichever test runs at that moment.
                continue
            self.asked.append(qname)
            ip = self.known.get(qname)
            self.sock.sendto(build_answer(query, qend, qtype, [ip] if ip else [], rcode=0 if ip else 3), peer)

    def close(self) -> None:
        """Stop the server thread before closing its socket. A close alone does not wake a thread blocked in
        recvfrom: the kernel keeps that socket, and its port, until a datagram comes, long after the test."""
        self.closing = True
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
            wake.sendto(b"", self.sock.getsockname())
        self.thread.join(timeout=5)
        self.sock.close()


@dataclass
class NetEnv:
    """A NetworkManager running in a private guest namespace, with fake containers and a fake upstream."""

    mgr: Any
    events: list[dict]
    names: dict[str, str]
    upstream: FakeUpstream
    state: Path
    containers: list[FakeContainer] = field(default_factory=list)

    def container(self) -> FakeContainer:
        c = start_container()
        self.containers.append(c)
        return c

    def counts(self) -> dict[str, int]:
        """What a removed container must not leave behind."""
        from pymachine_agent.network import nat, plumbing

        rules = nat.rules(self.names["nft_table"])
        return {
            "veths": len(plumbing.links_with_prefix(self.names["veth_prefix"])),
            "dnat_rules": sum(1 for r in rules if r.startswith("published:")),
            "dns_listeners": len(self.mgr.dns.containers()),
            "endpoint_records": len(list((self.state / "endpoints").glob("*.json"))),
            "published": len(self.mgr.published_ports()),
        }


def make_manager(
    state: Path, events: list[dict], names: dict[str, str], upstream: FakeUpstream, **kw: Any
) -> Any:
    from pymachine_agent.network import NetworkManager

    resolv = state.parent / "guest-resolv.conf"
    resolv.write_text("nameserver 10.0.2.3\nsearch guest.internal\n")
    return NetworkManager(
        state,
        on_port_event=events.append,
        default_subnet="10.200.0.0/24",
        address_pools=[("10.200.64.0/18", 24)],
        upstream_dns=[upstream.address],
        guest_resolv_conf=resolv,
        **names,
        **kw,
    )


@contextlib.contextmanager
def net_env(tmp: Path, **kw: Any) -> Iterator[NetEnv]:
    with private_guest():
        upstream = FakeUpstream({"example.test": "10.9.9.9"})
        names = unique_names()
        events: list[dict] = []
        state = tmp / "state"
        mgr = make_manager(state, events, names, upstream, **kw)
        env = NetEnv(mgr, events, names, upstream, state)
        try:
            mgr.start()
            yield env
        finally:
            try:
                env.mgr.close()
            finally:  # never leak the fake containers, even if the manager fails to close
                for c in env.containers:
                    c.stop()
                upstream.close()


def dns_query_tcp(name: str, server: str = "127.0.0.11", port: int = 53, timeout: float = 3.0) -> bytes:
    """The raw reply to an A query for `name` over TCP (length-prefixed)."""
    question = (
        b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    )
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + question
    with socket.create_connection((server, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data[2:]
