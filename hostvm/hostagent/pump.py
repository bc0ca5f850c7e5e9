"""Copy bytes both ways between a host socket and an SSH channel, with half-close carried across.

Two threads per connection, each a blocking read/write loop: paramiko channels are thread-safe for one reader
and one writer, and blocking loops keep the per-byte cost in C (recv/sendall) rather than in a select loop.
Half-close matters for Docker: `docker run -i` and `docker exec` shut their write side and keep reading.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from paramiko import SSHException
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


def _chan_to_sock(chan: Channel, sock: socket.socket, hold_after_upgrade: bool = False) -> None:
    held = False  # the last write ended a `101` reply's headers: the next waits until the client read them
    try:
        while True:
            data = chan.recv(CHUNK)
            if not data:
                break
            if not hold_after_upgrade:
                sock.sendall(data)
                continue
            head, rest = split_after_upgrade(data)
            if held:
                wait_peer_read(sock)
            sock.sendall(head)
            held = bool(head) and not rest and head.endswith(b"\r\n\r\n") and _is_upgrade(head)
            if rest:
                wait_peer_read(sock)
                sock.sendall(rest)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _is_upgrade(head: bytes) -> bool:
    start = head.rfind(b"HTTP/1.1 101 ")
    return start >= 0 and head.find(b"\r\n\r\n", start) == len(head) - 4


def split_after_upgrade(data: bytes) -> tuple[bytes, bytes]:
    """(up to the end of a `101` reply's headers, what follows) — or (data, b"") without one.

    docker-py reads a hijacked reply's headers through a buffered file and the stream after them from the raw
    socket: stream bytes that reach it together with the headers land in that buffer and are lost (an attach
    replay or a quick exec's output came back empty through the forwarded socket). The guest agent already
    holds its stream until its peer read the headers, but the SSH link can still deliver both at once here."""
    start = data.find(b"HTTP/1.1 101 ")
    if start < 0:
        return data, b""
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return data, b""
    return data[: end + 4], data[end + 4 :]


def wait_peer_read(sock: socket.socket, timeout: float = 0.5) -> None:
    """Wait (bounded) until the local client has read what we sent: the unread bytes of the socket's send
    queue (TIOCOUTQ; on a unix socket they count until the peer reads them) reach 0. Where the platform has
    no such query, a short pause does the same job most of the time."""
    try:
        import fcntl
        import struct
        import termios

        request = termios.TIOCOUTQ
    except (ImportError, AttributeError):
        time.sleep(0.02)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            left = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]
        except OSError:
            return
        if left <= 0:
            return
        time.sleep(0.002)


def splice(
    sock: socket.socket, chan: Channel, name: str = "fwd", hold_after_upgrade: bool = False
) -> threading.Thread:
    """Start copying; the returned thread ends when both directions are done and both ends are closed.
    `hold_after_upgrade` (the engine socket): see split_after_upgrade."""

    def run() -> None:
        up = threading.Thread(target=_sock_to_chan, args=(sock, chan), name=f"{name}-up", daemon=True)
        up.start()
        _chan_to_sock(chan, sock, hold_after_upgrade)
        # The guest side finished; if the host side never half-closes (an idle keep-alive client), don't
        # wait forever — closing the socket ends the up thread's recv.
        up.join(timeout=30)
        try:
            chan.close()
        except (EOFError, OSError, SSHException):
            pass  # the link died under this connection (paramiko raises EOFError then): nothing left to close
        try:
            sock.close()
        except OSError:
            pass
        up.join(timeout=1)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
