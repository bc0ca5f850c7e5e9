"""Copy bytes both ways between a host socket and an SSH channel, with half-close carried across.

Two threads per connection, each a blocking read/write loop: paramiko channels are thread-safe for one reader
and one writer, and blocking loops keep the per-byte cost in C (recv/sendall) rather than in a select loop.
Half-close matters for Docker: `docker run -i` and `docker exec` shut their write side and keep reading.
"""

from __future__ import annotations

import logging
import socket
import threading

from paramiko.channel import Channel

log = logging.getLogger(__name__)
CHUNK = 256 * 1024


def _sock_to_chan(sock: socket.socket, chan: Channel) -> None:
    try:
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            chan.sendall(data)
    except OSError:
        pass
    finally:
        try:
            chan.shutdown_write()
        except Exception:  # noqa: BLE001 - the channel may already be gone with its transport
            pass


def _chan_to_sock(chan: Channel, sock: socket.socket) -> None:
    try:
        while True:
            data = chan.recv(CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def splice(sock: socket.socket, chan: Channel, name: str = "fwd") -> threading.Thread:
    """Start copying; the returned thread ends when both directions are done and both ends are closed."""

    def run() -> None:
        up = threading.Thread(target=_sock_to_chan, args=(sock, chan), name=f"{name}-up", daemon=True)
        up.start()
        _chan_to_sock(chan, sock)
        # The guest side finished; if the host side never half-closes (an idle keep-alive client), don't
        # wait forever — closing the socket ends the up thread's recv.
        up.join(timeout=30)
        try:
            chan.close()
        finally:
            try:
                sock.close()
            except OSError:
                pass
        up.join(timeout=1)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
