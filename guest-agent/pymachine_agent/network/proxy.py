"""Userland port proxy (the alternative to DNAT): a thread relays each published port to the container.

Kept for kernels without nftables NAT and as the measured peer of DNAT (bench/bench_network_ports.py);
DNAT is the default because it measured faster (docs/networking.md).
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

UDP_IDLE = 60.0
YOUNG_S = 30.0  # how long after publishing a port a connection may wait for the container's server ...
WAIT_S = 10.0  # ... and how long one connection waits at most


def connect_retrying(target: tuple[str, int], deadline: float, stopped: Callable[[], bool]) -> socket.socket:
    """A TCP connection to target; a refused connect (the container's server not listening yet) is retried
    until `deadline` (time.monotonic()) or until `stopped()`. Raises the last OSError."""
    delay = 0.01
    while True:
        try:  # a starved guest can take seconds to complete even a local handshake
            upstream = socket.create_connection(target, timeout=max(5.0, deadline - time.monotonic()))
        except ConnectionRefusedError:
            if stopped() or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        upstream.settimeout(None)
        return upstream


def splice(client: socket.socket, upstream: socket.socket) -> None:
    """Relay both directions until each side has finished sending, then close both (blocks)."""
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the client sees a refusal, not an empty answer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class TcpProxy:
    """Accepts on `listener` (already bound and listening) and relays every connection to target."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        self.running = True
        self.born = time.monotonic()
        self.thread = threading.Thread(target=self._accept, name=f"proxy-tcp-{target}", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        client.settimeout(None)
        # while the port is young its server may still be starting (`docker run -d` returns before it
        # listens): a refused connect waits for it, as on the DNAT path (young.py)
        young = time.monotonic() - self.born < YOUNG_S
        deadline = time.monotonic() + (WAIT_S if young else 0)
        try:
            upstream = connect_retrying(self.target, deadline, lambda: not self.running)
        except OSError:
            reset(client)
            return
        splice(client, upstream)

    def close(self) -> None:
        self.running = False
        self.listener.close()
        self.thread.join(timeout=2)


class UdpProxy:
    """Relays datagrams from each client address through its own socket connected to the target."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        self.running = True
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.clients: dict[tuple[str, int], tuple[socket.socket, float]] = {}
        self.thread = threading.Thread(target=self._loop, name=f"proxy-udp-{target}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            try:
                events = self.selector.select(timeout=0.5)
            except (OSError, ValueError):
                return
            now = time.monotonic()
            for key, _ in events:
                try:
                    if key.data is None:
                        data, peer = self.listener.recvfrom(65536)
                        up = self._upstream(peer, now)
                        up.send(data)
                    else:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        self.listener.sendto(data, key.data)
                        self.clients[key.data] = (key.fileobj, now)  # type: ignore[assignment]
                except OSError:
                    continue
            for peer, (sock, seen) in list(self.clients.items()):
                if now - seen > UDP_IDLE:
                    self._drop(peer, sock)

    def _upstream(self, peer: tuple[str, int], now: float) -> socket.socket:
        found = self.clients.get(peer)
        if found:
            self.clients[peer] = (found[0], now)
            return found[0]
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        up.connect(self.target)
        self.selector.register(up, selectors.EVENT_READ, peer)
        self.clients[peer] = (up, now)
        return up

    def _drop(self, peer: tuple[str, int], sock: socket.socket) -> None:
        self.clients.pop(peer, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        for peer, (sock, _) in list(self.clients.items()):
            self._drop(peer, sock)
        self.selector.close()
        self.listener.close()
