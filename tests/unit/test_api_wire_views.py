"""wire.Reader's offset buffer and the body's memoryview pieces (api/wire.py, api/http.py BodyFile): whatever
way the sender cuts a chunked or a Content-Length body into sends and chunks, the pieces add up to the
body, the request after it on the same connection still parses, and lines split across receives come out
whole."""

from __future__ import annotations

import random
import socket
import threading

import pytest

from pymachine_agent.api import wire
from pymachine_agent.api.http import BodyFile, Connection


def serve_bytes(data: bytes, seed: int) -> socket.socket:
    """The reading end of a socket pair whose other end sends `data` in random-sized pieces, then closes."""
    a, b = socket.socketpair()
    rng = random.Random(seed)

    def send() -> None:
        with b:
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 3, 511, 4096, 65536, 300_000])
                b.sendall(data[pos : pos + n])
                pos += n

    threading.Thread(target=send, daemon=True).start()
    return a


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        n = rng.choice([1, 7, 4096, 32768, 32768, 100_000])
        piece = body[pos : pos + n]
        ext = b";name=x" if rng.random() < 0.1 else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        pos += n
    return b"".join(out) + b"0\r\n\r\n"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_a_body_read_as_views_adds_up_and_the_next_request_parses(seed: int, framing: str) -> None:
    rng = random.Random(seed)
    body = rng.randbytes(rng.choice([0, 1, 5000, 3 << 20]))
    if framing == "chunked":
        head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
        framed = chunked(body, rng)
    else:
        head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n" % len(body)
        framed = body
    sock = serve_bytes(head + framed + b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", seed)
    with sock:
        conn = Connection(sock, [])
        req = conn.read_request()
        assert req is not None and req.path == "/images/load"
        f = BodyFile(req)
        pieces = []
        while piece := f.read(rng.choice([1, 512, 1 << 20, -1])):
            assert isinstance(piece, (bytes, memoryview))
            pieces.append(bytes(piece))
        assert b"".join(pieces) == body
        f.drain()
        nxt = conn.read_request()
        assert nxt is not None and (nxt.method, nxt.path) == ("GET", "/_ping")


def test_received_chunks_come_out_joined() -> None:
    """`docker load`'s 32 KiB chunks, all received before the reader asks: fewer pieces than chunks (each
    piece runs the tar, hash and write readers once), still exactly the body."""
    rng = random.Random(7)
    body = rng.randbytes(4 * 32768)
    framed = b"".join(b"%x\r\n%s\r\n" % (32768, body[i : i + 32768]) for i in range(0, len(body), 32768))
    head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
    a, b = socket.socketpair()
    with a, b:
        b.sendall(head + framed + b"0\r\n\r\n")  # 128 KiB: within a unix socket's default buffer
        conn = Connection(a, [])
        req = conn.read_request()
        assert req is not None
        f = BodyFile(req)
        pieces = []
        while piece := f.read(-1):
            pieces.append(bytes(piece))
        assert b"".join(pieces) == body
        assert len(pieces) < 4, [len(p) for p in pieces]


def test_lines_split_across_receives_come_out_whole() -> None:
    lines = [b"x" * n + b"\r\n" for n in (0, 1, 70, 4095, 65535, 65536, 100_000)]
    sock = serve_bytes(b"".join(lines) + b"tail", 1)
    with sock:
        reader = wire.Reader(sock)
        for line in lines:
            assert reader.readline(1 << 20, None) == line
        assert reader.read(2) == b"ta"
        view = reader.read(10, view=True)
        assert bytes(view) == b"il"
        assert reader.read(10, view=True) == b""


def test_a_view_stays_valid_after_later_reads() -> None:
    """A memoryview handed out is of bytes that never change: later receives must not overwrite it."""
    data = bytes(range(256)) * 8192  # 2 MiB
    sock = serve_bytes(data, 2)
    with sock:
        reader = wire.Reader(sock)
        views = []
        while v := reader.read(1 << 20, view=True):
            views.append(v)
        assert b"".join(views) == data
