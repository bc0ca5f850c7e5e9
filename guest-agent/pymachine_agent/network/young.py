"""Young published ports: a TCP port answers the moment `docker run` returns, even before the container's
server listens.

`docker run -d -p 8080:80 httpd` returns once the container's process is started, not once it has bound
port 80. With the DNAT rule alone, a connection in that window reaches the container's namespace before any
listener and is refused; on the QEMU path slirp has already accepted the host's client and turns the refusal
into "connection reset by peer". So for the first moments of a published TCP port's life the nftables table
redirects it (`redirect to :<relay port>`) to a relay in the agent, which accepts at once and retries a
refused connect to the container for up to proxy.WAIT_S, as the host agent's SSH path does for its channels.

A watcher reads the container's /proc/<pid>/net/tcp{,6}: as soon as a socket listens on the container port (or
proxy.YOUNG_S passed, or the process is gone), the port has grown up, `on_grown` re-renders the table with the
plain DNAT rule, and new connections go through the kernel at full speed. Relayed connections keep their
conntrack entry (NAT is decided on a flow's first packet), so they go on through the relay until they end; the
relay's listener stays GRACE_S longer for SYNs that were redirected just before the switch. Reading /proc,
unlike a probing connect, never shows the container's server a connection nobody made.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable

from .model import PublishedPort
from .proxy import WAIT_S, YOUNG_S, connect_retrying, reset, splice

log = logging.getLogger(__name__)
GRACE_S = 2.0
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def listening(pid: int, port: int) -> bool | None:
    """Whether a TCP socket in the network namespace of process `pid` listens on `port` (any address, IPv4 or
    IPv6); None when the process is gone."""
    seen = False
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue  # tcp6 is missing without IPv6; both are missing when the process is gone
        seen = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                return True
    return False if seen else None


class YoungPort:
    """The relay of one published TCP port until its server listens (see the module docstring). `grown` turns
    True once the DNAT rule may take over; `close` stops it (the container stopped)."""

    def __init__(self, pid: int, port: PublishedPort, on_grown: Callable[[], None]) -> None:
        self.pid = pid
        self.port = port
        self.on_grown = on_grown
        self.born = time.monotonic()
        self.grown = False
        self.closed = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # every guest address: the redirect keeps the address a connection came to (10.0.2.15 from QEMU,
            # 127.0.0.1 from the SSH path, a bridge's gateway from a container)
            self.listener.bind(("0.0.0.0", 0))
            self.listener.listen(128)
            self.listener.setblocking(False)
        except OSError:
            self.listener.close()
            raise
        self.relay_port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._watch, name=f"young-{port.host_port}", daemon=True)
        self.thread.start()

    def _ready(self) -> bool:
        """The port may grow up: the server listens, the process is gone, or the port is old enough."""
        if time.monotonic() - self.born > YOUNG_S:
            return True
        return listening(self.pid, self.port.container_port) is not False

    def _watch(self) -> None:
        """Accept for the relay, and watch for the server. The switch to DNAT (an nft run: seconds on a
        starved guest) runs in a thread of its own: connections redirected meanwhile must still be accepted,
        and the grace period counts from when the DNAT rule is really in place."""
        delay = 0.01
        switched = threading.Event()
        grace_end: float | None = None
        try:
            while not self.closed:
                if not self.grown and self._ready():
                    self.grown = True
                    threading.Thread(target=self._grow, args=(switched,), daemon=True).start()
                if grace_end is None and switched.is_set():
                    grace_end = time.monotonic() + GRACE_S
                if grace_end is not None and time.monotonic() >= grace_end:
                    self._accept()  # the last ones redirected before the switch
                    return
                try:
                    readable = select.select([self.listener], [], [], delay)[0]
                except (OSError, ValueError):
                    return
                if readable:
                    self._accept()
                delay = min(delay * 1.5, 0.1)
        finally:
            self.listener.close()

    def _grow(self, switched: threading.Event) -> None:
        try:
            self.on_grown()
        except Exception as exc:  # noqa: BLE001 - the table still redirects here: keep relaying
            log.warning("port %s: DNAT not taking over: %s", self.port.host_port, exc)
            return
        switched.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # BlockingIOError: none left
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        client.setblocking(True)
        target = (self.port.container_ip, self.port.container_port)
        try:
            upstream = connect_retrying(target, time.monotonic() + WAIT_S, lambda: self.closed)
        except OSError:
            reset(client)  # nothing listened in time: the client sees what DNAT would have shown it
            return
        splice(client, upstream)

    def close(self) -> None:
        """Stop accepting (the watcher closes the listener within its poll interval); relayed connections end
        with the container. Never joins: the watcher may be waiting for the lock the caller holds."""
        self.closed = True
