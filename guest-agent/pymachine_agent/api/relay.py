"""The fast path's guest end: a TCP listener serving the API to connections proving the host agent's secret.

`PUT /pymachine/v1/fastpath {"secret": hex}` (sent by the host agent over the SSH link at every link-up) arms
it: the listener starts on first use and the new secret replaces the old one. It listens on
`RELAY_GUEST_PORT` bound to the uplink device (SO_BINDTODEVICE eth0), so only what arrives on the uplink
(QEMU's user network, and there the host agent's hostfwd) can connect: a container's connection to a guest
address enters on its bridge (or on `lo` with the host network) and is refused by the kernel, before our
nftables guard (network/nat.py) would drop it anyway. Each connection must open with the handshake of
fastpath.py within HELLO_TIMEOUT; then the unix socket's own handler serves it, no copy in between.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import socketserver
import struct
import threading
import time

from .. import fastpath
from ..protocol import API_PREFIX
from .http import HTTPError, Request
from .server import Router

log = logging.getLogger("pymachine_agent.api.relay")
UPLINK = "eth0"
# QEMU's user network (slirp) connects a hostfwd'd client to the guest from its host alias, 10.0.2.2: nothing
# else may open a connection to the relay, not even the guest's own network namespace (a `--network host`
# container), whose connections to 10.0.2.15 pass SO_BINDTODEVICE (Linux counts them as arriving on eth0).
SLIRP_HOST = "10.0.2.2"
HELLO_TIMEOUT = 10.0
MAX_HANDSHAKES = 32  # connections still owing their hello: a flood of idle ones costs the guest no more
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SKF_NET_OFF = -0x100000  # classic BPF: offsets from the IP header


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


def only_from(sock: socket.socket, source: str) -> ctypes.Array:
    """Attach a socket filter that drops every packet whose IPv4 source is not `source`: a SYN from anyone
    else never reaches the listener (no RST, no accept, nothing logged). Returns the program, which must live
    as long as the call (the kernel copies it)."""
    ld_abs_w, jeq_k, ret_k = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    program = (_SockFilter * 4)(
        _SockFilter(ld_abs_w, 0, 0, (SKF_NET_OFF + 12) & 0xFFFFFFFF),  # A = the IPv4 source address
        _SockFilter(jeq_k, 0, 1, int(ipaddress.IPv4Address(source))),
        _SockFilter(ret_k, 0, 0, 0xFFFFFFFF),  # keep the packet
        _SockFilter(ret_k, 0, 0, 0),  # drop it
    )
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program), ctypes.addressof(program))
    )
    return program


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RECEIVE_BUFFER = 4 << 20  # the kernel accounts twice this: ~4-6 MiB of payload queued


def grow_receive_buffer(sock: socket.socket) -> None:
    """A large receive buffer from the start. A `docker load` through slirp (1,500-byte segments) began with
    the kernel's 128 KiB, grown by autotuning only after ~4 s, because the agent reads slowly (it hashes and
    writes): meanwhile each receive brought ~64 KiB, and the agent's Python ran per receive. Root (the agent
    in the VM) may exceed rmem_max (SO_RCVBUFFORCE); anyone else gets what SO_RCVBUF allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


class _RelayServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    host_side = True  # every connection it serves proved the host agent's secret first (admit)

    def __init__(self, relay: Relay, handler: type[socketserver.BaseRequestHandler]) -> None:
        self.relay = relay
        super().__init__(("0.0.0.0", relay.port), handler, bind_and_activate=False)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, relay.device.encode())
            if relay.peer:
                only_from(self.socket, relay.peer)
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        # in the connection's own thread (ThreadingMixIn): a slow hello holds up nobody else
        if self.relay.admit(request, client_address):
            super().finish_request(request, client_address)


class Relay:
    def __init__(
        self,
        handler: type[socketserver.BaseRequestHandler],
        device: str = UPLINK,
        port: int = fastpath.RELAY_GUEST_PORT,
        peer: str = SLIRP_HOST,
    ) -> None:
        self.handler = handler
        self.device = device
        self.peer = peer  # the only source address admitted ("" in tests on loopback: any)
        self.port = port
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self._seen = fastpath.SeenNonces()
        self._server: _RelayServer | None = None
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self.admitted = 0
        self.refused = 0

    def arm(self, secret: bytes) -> int:
        """Listen (once) and take `secret` as the only one from now on; returns the guest port."""
        with self._lock:
            if self._server is None:
                self._server = _RelayServer(self, self.handler)
                threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.5},
                    name="relay",
                    daemon=True,
                ).start()
            self._secret, self._seen = secret, fastpath.SeenNonces()
        return self.port

    def admit(self, sock: socket.socket, peer: tuple[str, int]) -> bool:
        """Check the hello and answer with the proof; False (logged): the connection is closed unanswered."""
        if self.peer and peer[0] != self.peer:
            reason = f"not from {self.peer}"
        elif not self._handshakes.acquire(blocking=False):
            reason = f"{MAX_HANDSHAKES} handshakes pending already"
        else:
            try:
                reason = self._check(sock)
            finally:
                self._handshakes.release()
        if reason:
            self.refused += 1
            log.warning("fast path: refused a connection from %s:%s: %s", peer[0], peer[1], reason)
            return False
        self.admitted += 1
        return True

    def _check(self, sock: socket.socket) -> str:
        data = b""
        deadline = time.monotonic() + HELLO_TIMEOUT
        try:
            while len(data) < fastpath.HELLO_LEN:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(fastpath.HELLO_LEN - len(data))
                if not chunk:
                    return f"closed after {len(data)} bytes of the handshake"
                data += chunk
        except TimeoutError:
            return f"no handshake within {HELLO_TIMEOUT:g} s ({len(data)} bytes)"
        except OSError as exc:
            return f"reading the handshake: {exc}"
        with self._lock:
            secret = self._secret
            nonce = fastpath.check_hello(secret, data) if secret is not None else None
            if nonce is None:
                return "wrong handshake (not the host agent's secret)"
            if not self._seen.add(nonce):
                return "a replayed handshake"
        try:
            sock.settimeout(None)  # the API's reader polls with its own deadlines on a blocking socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            grow_receive_buffer(sock)
            sock.sendall(fastpath.proof(secret, nonce))
        except OSError as exc:
            return f"answering the handshake: {exc}"
        return ""

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def register(router: Router, relay: Relay) -> None:
    @router.route("PUT", API_PREFIX + "/fastpath")
    def pm_fastpath(req: Request) -> tuple[int, dict]:
        try:
            secret = fastpath.parse_secret(req.json())
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        try:
            port = relay.arm(secret)
        except OSError as exc:  # no uplink (an agent outside a VM), the port taken: the host keeps SSH
            raise HTTPError(
                503, f"the fast path cannot listen on {relay.device}:{relay.port}: {exc}"
            ) from None
        return 200, {"port": port, "device": relay.device}
