"""The engine socket's forwarder keeps a hijacked stream out of the read that carries the 101 headers."""

from __future__ import annotations

import socket
import threading

from pymachine.hostvm.hostagent import pump

HEAD = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nUpgrade: tcp\r\n\r\n"


def test_split_after_upgrade() -> None:
    assert pump.split_after_upgrade(HEAD + b"hello\n") == (HEAD, b"hello\n")
    assert pump.split_after_upgrade(HEAD) == (HEAD, b"")
    assert pump.split_after_upgrade(b"HTTP/1.1 200 OK\r\n\r\nbody") == (b"HTTP/1.1 200 OK\r\n\r\nbody", b"")
    assert pump.split_after_upgrade(b"HTTP/1.1 101 UPGR") == (b"HTTP/1.1 101 UPGR", b"")


class _Chan:
    """A channel whose only message is the 101 headers and the stream, in one piece (as SSH can deliver)."""

    def __init__(self, data: bytes) -> None:
        self.pieces = [data]

    def recv(self, _n: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


def test_the_stream_waits_until_the_client_read_the_headers() -> None:
    ours, client = socket.socketpair()
    got: list[bytes] = []
    t = threading.Thread(target=pump._chan_to_sock, args=(_Chan(HEAD + b"hello\n"), ours, True))
    t.start()
    # the client reads the headers as docker-py's buffered reader does: whatever is there, up to 8 KiB
    first = client.recv(8192)
    t.join(5)
    while chunk := client.recv(8192):
        got.append(chunk)
    assert first == HEAD and b"".join(got) == b"hello\n"


class _DeadLinkChan:
    """A channel whose SSH transport died (a guest agent restart, a VM gone): paramiko's reads end, and its
    writes, half-close and close raise EOFError from the closed transport socket."""

    def recv(self, _n: int) -> bytes:
        return b""

    def sendall(self, _data: bytes) -> None:
        raise EOFError()

    def shutdown_write(self) -> None:
        raise EOFError()

    def close(self) -> None:
        raise EOFError()


def test_a_connection_whose_link_died_ends_without_an_error_in_its_thread(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seen as an unhandled EOFError in the docker-fwd thread in the privileged tier (the guest agent restart
    test): the socket was closed anyway, but the error escaped the thread."""
    escaped: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_type))
    host, client = socket.socketpair()
    client.close()  # the client went too: nothing keeps the up direction open
    done = pump.splice(host, _DeadLinkChan(), name="docker-fwd")  # type: ignore[arg-type]
    done.join(timeout=60)
    assert not done.is_alive()
    assert escaped == []
    assert host.fileno() == -1  # the host side is closed all the same
