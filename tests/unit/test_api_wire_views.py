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
        f = BodyFile(req, rng.choice([1000, 1 << 20]))  # a piece's budget ends inside chunks, or not
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


def _chunked_request(payloads: list[bytes], terminators: list[bytes] | None = None) -> bytes:
    ends = terminators or [b"\r\n"] * len(payloads)
    framed = b"".join(b"%x\r\n%s%s" % (len(p), p, end) for p, end in zip(payloads, ends, strict=True))
    head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + framed + b"0\r\n\r\n"


def test_chunks_already_received_are_framed_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 chunks received at once: their size lines are read in one pass over the buffer
    (wire.Reader.chunk_payloads), not by a readline and a chunk_size each: under TCG those Python calls
    per 32 KiB chunk were a quarter of the agent's Python per `docker load`."""
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.choice([1, 100, 4096])) for _ in range(64)]
    calls = {"readline": 0}
    readline = wire.Reader.readline

    def counting(self: wire.Reader, limit: int, deadline: float | None) -> bytes:
        calls["readline"] += 1
        return readline(self, limit, deadline)

    a, b = socket.socketpair()
    with a, b:
        b.sendall(_chunked_request(payloads))
        conn = Connection(a, [])
        req = conn.read_request()
        assert req is not None
        monkeypatch.setattr(wire.Reader, "readline", counting)
        f = BodyFile(req)
        got = []
        while piece := f.read(-1):
            got.append(bytes(piece))
        assert b"".join(got) == b"".join(payloads)
    assert calls["readline"] <= 4, calls  # the last chunk's line and the trailers' end, not 2 × 64


@pytest.mark.parametrize("bad", [3, 0, 63])
def test_a_chunk_without_its_crlf_is_refused_inside_a_run(bad: int) -> None:
    """A chunk whose payload is longer than its size line says, among chunks framed in one pass: the same 400
    as the general parser gives, and nothing past it is handed out as body."""
    payloads = [bytes([i]) * 100 for i in range(64)]
    ends = [b"\r\n"] * 64
    ends[bad] = b"XY"
    a, b = socket.socketpair()
    with a, b:
        b.sendall(_chunked_request(payloads, ends))
        conn = Connection(a, [])
        req = conn.read_request()
        assert req is not None
        f = BodyFile(req)
        got = []
        with pytest.raises(wire.ProtocolError) as err:
            while piece := f.read(-1):
                got.append(bytes(piece))
        assert err.value.status == 400 and "longer than its size line" in str(err.value)
        assert b"".join(got) == b"".join(payloads[:bad])[: len(b"".join(got))]
        assert len(b"".join(got)) <= 100 * (bad + 1)


def test_odd_size_lines_in_a_run_still_parse() -> None:
    """What the one-pass framing leaves to the general parser (extensions, spaces, a bare LF, upper-case hex,
    leading zeros) comes out the same, in the middle of a run of plain chunks."""
    payloads = [bytes([i]) * (i + 10) for i in range(12)]
    lines = [b"%x" % len(p) for p in payloads]
    lines[2] = b"%X" % len(payloads[2])
    lines[4] = b"%x;name=value" % len(payloads[4])
    lines[6] = b"00%x" % len(payloads[6])
    lines[8] = b"%x \t" % len(payloads[8])
    ends = [b"\n" if i == 10 else b"\r\n" for i in range(len(lines))]  # a bare LF after one size line
    framed = b"".join(line + end + p + b"\r\n" for line, end, p in zip(lines, ends, payloads, strict=True))
    head = b"POST /images/load HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
    a, b = socket.socketpair()
    with a, b:
        b.sendall(head + framed + b"0\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        conn = Connection(a, [])
        req = conn.read_request()
        assert req is not None
        f = BodyFile(req)
        got = []
        while piece := f.read(-1):
            got.append(bytes(piece))
        assert b"".join(got) == b"".join(payloads)
        nxt = conn.read_request()
        assert nxt is not None and nxt.path == "/_ping"
