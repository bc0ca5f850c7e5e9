"""UDP over SSH for a published UDP port: SSH only carries streams, so datagrams are framed.

Host side: one bound UDP socket per published port. Each datagram becomes a frame `client_id:u32 len:u16
payload` on an exec channel running `_RELAY` in the guest, which keeps one connected UDP socket per client id
towards 127.0.0.1:<guest_port> and frames the replies back. The channel is opened lazily and reopened after
a link loss, so the host socket (and the port the user sees) never goes away.
"""

from __future__ import annotations

import logging
import shlex
import socket
import struct
import threading

import paramiko

from .ports import PortRule
from .transport import Link

log = logging.getLogger(__name__)
HEADER = struct.Struct("!IH")

_RELAY = r"""
import os, select, socket, struct, sys
port = int(sys.argv[1]); H = struct.Struct("!IH"); socks = {}; ids = {}; buf = b""
while True:
    r, _, _ = select.select([0] + list(socks.values()), [], [])
    for f in r:
        if f == 0:
            d = os.read(0, 65536)
            if not d: sys.exit(0)
            buf += d
            while len(buf) >= H.size:
                cid, n = H.unpack_from(buf)
                if len(buf) < H.size + n: break
                data = buf[H.size:H.size + n]; buf = buf[H.size + n:]
                s = socks.get(cid)
                if s is None:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", port))
                    socks[cid] = s; ids[s] = cid
                try: s.send(data)
                except OSError: pass
        else:
            try: d = f.recv(65535)
            except OSError: continue
            os.write(1, H.pack(ids[f], len(d)) + d)
"""


class UdpRelay:
    def __init__(self, sock: socket.socket, rule: PortRule, link: Link) -> None:
        self.sock = sock
        self.rule = rule
        self.link = link
        self._chan: paramiko.Channel | None = None
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, int], int] = {}
        self._addrs: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self.last_error = ""

    def healthy(self) -> bool:
        return not self.last_error

    def start(self) -> None:
        threading.Thread(target=self._host_loop, name=f"udp-{self.rule.host_port}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._chan is not None:
                self._chan.close()

    def retarget(self, rule: PortRule) -> None:
        self.rule = rule
        with self._lock:
            if self._chan is not None:
                self._chan.close()  # the next datagram opens a relay towards the new guest port
                self._chan = None

    def _channel(self) -> paramiko.Channel:
        with self._lock:
            if self._chan is not None and not self._chan.closed and self._chan.get_transport().is_active():
                return self._chan
            transport = self.link.get(timeout=10)
            chan = transport.open_session()
            chan.exec_command(f"python3 -c {shlex.quote(_RELAY)} {self.rule.guest_port}")
            self._chan = chan
            threading.Thread(target=self._guest_loop, args=(chan,), daemon=True).start()
            return chan

    def _host_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if self._stop.is_set():
                # stop() came while we waited: the owner's shutdown woke the receive with (b"", None), which
                # is no datagram, and the port is closed anyway: relay nothing, open no channel.
                return
            cid = self._clients.get(addr)
            if cid is None:
                cid = len(self._clients) + 1
                self._clients[addr] = cid
                self._addrs[cid] = addr
            try:
                self._channel().sendall(HEADER.pack(cid, len(data)) + data)
                self.last_error = ""
            except (paramiko.SSHException, OSError) as exc:
                # UDP may drop: losing a datagram while the link heals is within its contract.
                self.last_error = str(exc)

    def _guest_loop(self, chan: paramiko.Channel) -> None:
        buf = b""
        while True:
            try:
                data = chan.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= HEADER.size:
                cid, n = HEADER.unpack_from(buf)
                if len(buf) < HEADER.size + n:
                    break
                payload, buf = buf[HEADER.size : HEADER.size + n], buf[HEADER.size + n :]
                addr = self._addrs.get(cid)
                if addr is not None:
                    try:
                        self.sock.sendto(payload, addr)
                    except OSError:
                        pass
