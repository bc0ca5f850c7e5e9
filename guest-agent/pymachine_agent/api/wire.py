"""The bytes of an HTTP/1.1 request: limits, timeouts, a deadline-aware reader and the parsers of the
request head and of body framing. Malformed framing becomes a `ProtocolError` carrying the 4xx/5xx to
answer with; Go's net/http (what dockerd serves with) is the reference for which status fits.

Why the limits are what they are:
- request line 64 KiB (414 beyond): the longest lines Docker clients send are `filters` and repeated
  `names=` of `docker save`; 64 KiB holds over a thousand image names. The HTTP RFCs ask for 8 KB at least.
- header block 256 KiB and 200 lines (431 beyond): the largest header a client sends is `X-Registry-Config`
  (every registry credential of the CLI's config.json, base64) — a few KB per registry. Go allows 1 MiB in
  all; every connection holds its head in memory in a VM that may have 1 GiB, so we keep a quarter of it.
- JSON bodies 4 MiB (413 beyond): the largest JSON a client sends is a container create carrying a custom
  seccomp profile inline (Docker's default profile is ~60 KB as the CLI sends it); 4 MiB is ~60× that.
  Streaming bodies (image load, build context, archive PUT) are not buffered and have no size limit.
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass

from ..errors import AgentError

MAX_REQUEST_LINE = 64 * 1024
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADERS = 200
MAX_JSON_BODY = 4 * 1024 * 1024
MAX_DRAIN = 256 * 1024  # an unread body up to this size is skipped to keep the connection (Go's limit)
MAX_CHUNK_LINE = 4096
LINGER_SECONDS = 1.0  # after an error with unread input: half-close and discard so the reply is not reset

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HTAB
_PLAIN_CHUNK = re.compile(rb"([0-9a-fA-F]{1,15})\r\n")  # a size line as clients send it: no extension


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `idle`: a connection with no request in progress (new or kept alive) is closed silently.
    `head`: from the first byte of a request, its line and headers must arrive within this (else 408).
    `body`: a JSON body must arrive within this in all; a streaming body may not stall longer (else 408).
    Hijacked attach/exec streams have no timeout: an interactive shell may be idle for hours."""

    idle: float = 120.0
    head: float = 30.0
    body: float = 60.0


class HTTPError(AgentError):
    """An error reply: `{"message": ...}` with a Docker status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


class ProtocolError(HTTPError):
    """The request cannot be framed; answer `status` (when nothing went out yet) and close."""


class ReadTimeout(ProtocolError):
    def __init__(self, message: str) -> None:
        super().__init__(408, message)


MAX_RECV = 1 << 20  # one recv of a large body: fewer calls than 64 KiB pieces, under TCG each one counts


class Reader:
    """Buffered reads from a blocking socket, each bounded by an optional monotonic deadline.

    The deadline is checked with poll() before every recv, so a peer that dribbles one byte at a time
    cannot stretch it (a per-recv socket timeout would restart on every byte). The socket itself stays
    blocking: the writer side (another thread, for hijacked streams) never sees a timeout change.

    The buffer is the last recv's bytes and an offset into them, not a bytearray that each recv appended to
    and each read cut from: a byte of a chunked body (`docker load` sends 32 KiB chunks) was copied three
    times in Python (recv, append, take), and under TCG every copy of the body costs. `read(view=True)`
    hands out memoryviews of recv's own bytes (immutable: nothing changes under a view), so a body byte is
    copied once here, by the kernel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""  # the bytes from _pos on are received and not yet read
        self._pos = 0
        self.eof = False

    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return len(self._buf) - self._pos

    def has_line(self, limit: int) -> bool:
        """Whether a whole line (or `limit` bytes of one) is received and not yet read: readline would not
        wait."""
        return self.buffered() >= limit or self._buf.find(b"\n", self._pos, self._pos + limit) >= 0

    def _fill(self, deadline: float | None, size: int = 65536) -> bool:
        """Read more into the buffer; False at EOF. Raises ReadTimeout when the deadline passes first.
        The unread rest is joined to the new bytes: callers fill only when it is part of one line."""
        data = self._recv(size, deadline)
        if data:
            rest = self._buf[self._pos :] if self.buffered() else b""
            self._buf, self._pos = (rest + data if rest else data), 0
        return bool(data)

    def _recv(self, size: int, deadline: float | None) -> bytes:
        if self.eof:
            return b""
        try:
            if deadline is None:
                data = self.sock.recv(size)
            elif time.monotonic() >= deadline:
                raise ReadTimeout("timed out waiting for the client to send the request")
            else:
                # the bytes are usually there already (a load's body): poll only when they are not, one
                # syscall and a poll object less per receive
                try:
                    data = self.sock.recv(size, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    if not self._ready(deadline - time.monotonic()):
                        raise ReadTimeout("timed out waiting for the client to send the request") from None
                    data = self.sock.recv(size)
        except OSError:  # a reset is the end of input like any other
            data = b""
        if not data:
            self.eof = True
        return data

    def _ready(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
        try:
            return bool(poller.poll(timeout * 1000))
        except InterruptedError:
            return False

    def wait(self, timeout: float) -> bool:
        """True when data (or EOF) is there within `timeout` seconds."""
        if self.buffered() or self.eof:
            return True
        return self._ready(timeout)

    def readline(self, limit: int, deadline: float | None) -> bytes:
        """Up to and including b"\\n"; at most `limit` bytes (the caller sees no newline when the line is
        longer), or what is left at EOF."""
        scanned = 0  # unread bytes already searched
        while True:
            end = self._buf.find(b"\n", self._pos + scanned, self._pos + limit)
            if end >= 0:
                return self._take(end + 1 - self._pos)
            if self.buffered() >= limit:
                return self._take(limit)
            scanned = self.buffered()
            if not self._fill(deadline):
                return self._take(self.buffered())

    def read(self, size: int, deadline: float | None = None, view: bool = False) -> bytes | memoryview:
        """At least one byte and at most `size` (b"" at EOF). `view`: a memoryview of received bytes where
        that saves a copy (for a body's bulk: its readers only write, hash or join it)."""
        if not self.buffered():
            if not view:  # straight from the socket, up to 1 MiB a call, not via the buffer
                return self._recv(min(size, MAX_RECV), deadline)
            if not self._fill(deadline, MAX_RECV):
                return b""
        n = min(size, self.buffered())
        if not view:
            return self._take(n)
        start = self._pos
        self._pos += n
        return memoryview(self._buf)[start : start + n]

    def chunk_payloads(self, budget: int) -> tuple[list[memoryview], int, int]:
        """The payloads of the chunks already received, from here on, whose size line is plain hex and CRLF
        (what docker's Go client sends: 32 KiB chunks, ~1,300 per 40 MiB), as views, up to `budget` bytes, in
        one pass over the buffer: `(views, their total, left)`, `left` being the payload bytes of the last
        chunk taken that are still to come (its CRLF after them); 0 when each chunk taken ended with its CRLF,
        consumed here. It stops before anything else (the last chunk, size 0; extensions; a size line or
        CRLF cut by the end of what is received; anything malformed), which the general parser (readline,
        chunk_size) then reads, and says wrong. Under TCG each chunk through that parser's dozen Python calls
        cost the guest ~0.5 ms: about a quarter of the agent's Python per `docker load`."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        match, whole = _PLAIN_CHUNK.match, memoryview(buf)
        views: list[memoryview] = []
        total = left = 0
        while total < budget:
            m = match(buf, pos)
            if m is None:
                break
            size, start = int(m.group(1), 16), m.end()
            if size == 0:
                break
            if end - start >= size + 2 and size <= budget - total:
                if buf[start + size : start + size + 2] != b"\r\n":
                    break
                views.append(whole[start : start + size])
                total += size
                pos = start + size + 2
                continue
            take = min(size, end - start, budget - total)
            if take == size:  # all of it is here but not all of its CRLF: the general parser checks that
                take -= 1
            if take <= 0:
                break
            views.append(whole[start : start + take])
            total += take
            pos, left = start + take, size - take
            break
        self._pos = pos
        return views, total, left

    def _take(self, n: int) -> bytes:
        start = self._pos
        self._pos += n
        return self._buf if start == 0 and n == len(self._buf) else self._buf[start : start + n]


# -- the request head --------------------------------------------------------------------------------


def parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """b"GET /_ping HTTP/1.1\\r\\n" → ("GET", "/_ping", (1, 1)). 414 when the line did not end within the
    limit, 505 for an HTTP major version other than 1, 400 for anything else malformed."""
    if not line.endswith(b"\n"):
        if len(line) >= MAX_REQUEST_LINE:
            raise ProtocolError(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
        raise ProtocolError(400, "connection closed inside the request line")
    text = line.rstrip(b"\r\n")
    parts = text.split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] or _CTL.search(parts[1]):
        raise ProtocolError(400, f"malformed request line {text[:100]!r}")
    version = _VERSION.match(parts[2])
    if not version:
        raise ProtocolError(400, f"malformed HTTP version {parts[2][:20]!r}")
    major, minor = int(version.group(1)), int(version.group(2))
    if major != 1:
        raise ProtocolError(505, f"HTTP version {major}.{minor} is not supported (use HTTP/1.1)")
    target = parts[1].decode("latin-1")
    if not (target.startswith("/") or target.startswith(("http://", "https://")) or target == "*"):
        raise ProtocolError(400, f"malformed request target {target[:100]!r}")
    return parts[0].decode("ascii"), target, (major, minor)


def parse_header_line(line: bytes) -> tuple[str, str]:
    """One `Name: value` line (no folding, no space before the colon: both are request-smuggling tools)."""
    text = line.rstrip(b"\r\n")
    name, colon, value = text.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise ProtocolError(400, f"malformed header line {text[:100]!r}")
    value = value.strip(b" \t")
    if _CTL.search(value):
        raise ProtocolError(400, f"control character in header {name.decode()!r}")
    return name.decode("ascii"), value.decode("latin-1")


def content_length(values: list[str]) -> int | None:
    """The body length from every Content-Length header: digits only, all equal, below 2^63 (as Go)."""
    if not values:
        return None
    if any(v != values[0] for v in values):
        raise ProtocolError(400, f"conflicting Content-Length headers {values[:4]}")
    text = values[0].strip()
    if not text.isdigit() or not text.isascii() or len(text) > 19 or int(text) >= 2**63:
        raise ProtocolError(400, f"bad Content-Length {text[:40]!r}")
    return int(text)


def is_chunked(values: list[str], has_length: bool) -> bool:
    """Transfer-Encoding: only `chunked` is understood (501 for others, as Go); with a Content-Length too the
    body length is ambiguous, which is how requests are smuggled past proxies: 400."""
    if not values:
        return False
    codings = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    if codings != ["chunked"]:
        raise ProtocolError(501, f"unsupported Transfer-Encoding {', '.join(values)[:60]!r}")
    if has_length:
        raise ProtocolError(400, "both Transfer-Encoding and Content-Length are set")
    return True


def chunk_size(line: bytes) -> int:
    """The size line of one chunk: hex digits, optional `;extensions`; below 2^63."""
    if not line.endswith(b"\n"):
        raise ProtocolError(400, "chunk size line too long or cut off")
    text = line.rstrip(b"\r\n").split(b";", 1)[0].strip(b" \t")
    if not text or len(text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in text):
        raise ProtocolError(400, f"bad chunk size {text[:20]!r}")
    size = int(text, 16)
    if size >= 2**63:
        raise ProtocolError(400, f"chunk size {text.decode()} too large")
    return size
