"""A small HTTP/1.1 server connection: request parsing, responses, chunked streams and hijacking.

Why not `http.server`: the Docker API needs chunked *request* bodies (`docker build`), connection hijack
after `101 UPGRADED` reading from the same buffered reader the parser used, and half-close. Owning the
parser keeps those three exact. The limits, timeouts and framing rules live in wire.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import wire
from .wire import HTTPError, ProtocolError, Timeouts

STATUS_TEXT = {
    101: "UPGRADED",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class ClientGone(Exception):
    """The peer closed the connection while we were writing."""


class Headers:
    """Case-insensitive header map: `get` gives the last value, `get_all` every one (framing headers must
    be checked for repeats that disagree)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        self._all: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)
        self._all.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self._items.get(name.lower())
        return item[1] if item else default

    def get_all(self, name: str) -> list[str]:
        return list(self._all.get(name.lower(), []))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())


@dataclass
class Request:
    method: str
    target: str
    headers: Headers
    conn: Connection
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    query_all: dict[str, list[str]] = field(default_factory=dict)
    api_version: str | None = None  # "1.44" from a /v1.44/ prefix, None when unversioned
    content_length: int | None = None  # set by the parser; None with no body or a chunked one
    chunked: bool = False
    framing_error: ProtocolError | None = None  # the body could not be read: the reply names this
    _body: bytes | None = None
    body_consumed: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            self.query[key] = value
            self.query_all.setdefault(key, []).append(value)

    # -- body -------------------------------------------------------------------------------------

    def iter_body(self, size: int = 65536, deadline: float | None = None, view: bool = False):  # type: ignore[no-untyped-def]
        """Yield the request body in pieces (for large uploads: image load, build contexts, archives).

        Without `deadline` every read may wait `Timeouts.body` for data (a stall, not the whole upload, is
        bounded). A framing error is kept on the request so the reply can name it, and ends the connection.
        `view`: the pieces may be memoryviews of the received bytes (no copy; see wire.Reader)."""
        if self.body_consumed:
            if self._body:
                yield self._body
            return
        self.body_consumed = True
        try:
            yield from self._pieces(size, deadline, view)
        except ProtocolError as exc:
            self.framing_error = exc
            self.conn.close_after = self.conn.linger = True
            raise

    def _pieces(self, size: int, deadline: float | None, view: bool):  # type: ignore[no-untyped-def]
        reader, stall = self.conn.reader, self.conn.timeouts.body

        def until() -> float:
            return deadline if deadline is not None else time.monotonic() + stall

        if self.chunked and view:
            yield from self._gathered_chunks(size, until)
        elif self.chunked:
            while True:
                length = wire.chunk_size(reader.readline(wire.MAX_CHUNK_LINE, until()))
                if length == 0:
                    self._trailers(until())
                    return
                while length > 0:
                    piece = reader.read(min(size, length), until(), view)
                    if not piece:
                        raise ProtocolError(400, "connection closed inside a chunk")
                    length -= len(piece)
                    yield piece
                if reader.readline(3, until()) not in (b"\r\n", b"\n"):
                    raise ProtocolError(400, "chunk data longer than its size line says")
        else:
            remaining = self.content_length or 0
            while remaining > 0:
                piece = reader.read(min(size, remaining), until(), view)
                if not piece:
                    raise ProtocolError(400, f"connection closed with {remaining} bytes of the body missing")
                remaining -= len(piece)
                yield piece

    def _gathered_chunks(self, size: int, until: Callable[[], float]):  # type: ignore[no-untyped-def]
        """A chunked body in pieces of up to `size` that join the payloads of every chunk already received.

        `docker load` sends 32 KiB chunks (Go's io.Copy buffer) and its readers (tar, hash, write, each a
        few Python calls) ran once per chunk: under TCG that Python cost the guest as much as the write of
        the same bytes. Received chunks are joined into one piece (a copy in C: ~0.1 s per 40 MiB under
        TCG), so the readers run once per receive instead. A piece never waits for bytes not yet received:
        what is gathered goes out before any read that could block."""
        reader = self.conn.reader
        pieces: list[bytes | memoryview] = []
        total = 0
        left = 0  # payload bytes of the current chunk still to read

        def out() -> bytes | memoryview:
            nonlocal pieces, total
            piece = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces, total = [], 0
            return piece

        while True:
            if left == 0:
                # every plainly framed chunk already received, in one pass (wire.Reader.chunk_payloads)
                views, got, left = reader.chunk_payloads(size - total)
                if views:
                    pieces += views
                    total += got
                    if total >= size:
                        yield out()
                        continue
            if left == 0:  # the general parser: a size line not received yet, the last chunk, extensions
                if pieces and not reader.has_line(wire.MAX_CHUNK_LINE):
                    yield out()
                left = wire.chunk_size(reader.readline(wire.MAX_CHUNK_LINE, until()))
                if left == 0:
                    if pieces:
                        yield out()
                    self._trailers(until())
                    return
            if pieces and not reader.buffered():
                yield out()
            piece = reader.read(min(size - total, left), until(), True)
            if not piece:
                raise ProtocolError(400, "connection closed inside a chunk")
            left -= len(piece)
            pieces.append(piece)
            total += len(piece)
            if left == 0:
                if reader.buffered() < 2:
                    yield out()
                if reader.readline(3, until()) not in (b"\r\n", b"\n"):
                    raise ProtocolError(400, "chunk data longer than its size line says")
            if total >= size:
                yield out()

    def _trailers(self, deadline: float) -> None:
        budget = wire.MAX_HEADER_BYTES
        for _ in range(wire.MAX_HEADERS):
            line = self.conn.reader.readline(budget, deadline)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise ProtocolError(400, "chunked trailers too long or cut off")
            budget -= len(line)
        raise ProtocolError(400, "too many chunked trailers")

    def body(self) -> bytes:
        """The whole body, for JSON endpoints: at most MAX_JSON_BODY (413), within Timeouts.body (408)."""
        if self._body is None:
            limit = wire.MAX_JSON_BODY
            if self.content_length is not None and self.content_length > limit:
                self.conn.close_after = self.conn.linger = True  # the body stays unread
                self.body_consumed = True
                raise HTTPError(413, f"request body of {self.content_length} bytes is over the {limit} limit")
            deadline = time.monotonic() + self.conn.timeouts.body
            pieces, total = [], 0
            for piece in self.iter_body(deadline=deadline):
                total += len(piece)
                if total > limit:
                    self.conn.close_after = self.conn.linger = True
                    raise HTTPError(413, f"request body is over the {limit}-byte limit")
                pieces.append(piece)
            self._body = b"".join(pieces)
        return self._body

    def json(self, schema: Any = None) -> Any:
        """The body as JSON ({} when empty); with a `schema` (bodies.py) its field types are checked, a
        mismatch is a 400 naming the field."""
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise HTTPError(400, f"invalid JSON body: {exc}") from None
        if schema is not None:
            from .bodies import BodyError, check

            try:
                check(data, schema)
            except BodyError as exc:
                raise HTTPError(400, str(exc)) from None
        return data

    def drain(self) -> None:
        """Skip an unread body so the next request on this keep-alive connection parses. A chunked body,
        or one over MAX_DRAIN, is not read: the connection closes after the reply instead (as Go does)."""
        if self.body_consumed:
            return
        if not self.chunked and not self.content_length:
            self.body_consumed = True
            return
        if self.conn.close_after or self.chunked or (self.content_length or 0) > wire.MAX_DRAIN:
            self.body_consumed = True
            self.conn.close_after = self.conn.linger = True
            return
        try:
            for _ in self.iter_body(deadline=time.monotonic() + self.conn.timeouts.body):
                pass
        except ProtocolError:
            pass  # close_after is set; the handler's reply still goes out

    # -- query helpers ----------------------------------------------------------------------------

    def qbool(self, name: str, default: bool = False) -> bool:
        """moby's httputils.BoolValue: "", 0, no, false, none are false; anything else is true."""
        if name not in self.query:
            return default
        return self.query[name].strip().lower() not in ("", "0", "no", "false", "none")

    def qint(self, name: str, default: int | None = None) -> int | None:
        value = self.query.get(name, "")
        if value == "":
            return default
        try:
            return int(float(value))
        except ValueError:
            raise HTTPError(400, f"invalid value for {name}: {value!r}") from None

    def filters(self) -> dict[str, list[str]]:
        """`filters` as {key: [values]}, accepting the Go map form and the docker-py list form."""
        raw = self.query.get("filters", "")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise HTTPError(400, f"invalid filter '{raw}'") from None
        out: dict[str, list[str]] = {}
        for key, value in (data or {}).items():
            if isinstance(value, dict):
                out[key] = [k for k, on in value.items() if on]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            else:
                out[key] = [str(value)]
        return out


class BodyFile:
    """A request body as a readable file (`read(n)` gives at most n bytes, b"" at its end), for readers that
    consume it as it arrives (`docker load` unpacks the tar stream). `drain()` reads and drops the rest.
    `read` may give memoryviews of the received bytes (no copy): its reader writes, hashes or joins them
    (layers.ForwardReader hands tarfile bytes)."""

    def __init__(self, req: Request, size: int = 1 << 20) -> None:
        self._pieces = req.iter_body(size, view=True)
        self._piece, self._pos = b"", 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes | memoryview:
        if self._pos >= len(self._piece):
            self._piece, self._pos = next(self._pieces, b""), 0
        start, end = self._pos, len(self._piece) if n < 0 else min(len(self._piece), self._pos + n)
        self._pos = end
        return self._piece if start == 0 and end == len(self._piece) else self._piece[start:end]

    def drain(self) -> None:
        self._piece, self._pos = b"", 0
        try:
            for _ in self._pieces:
                pass
        except (ProtocolError, OSError):
            pass  # the framing error is kept on the request; the reply names it


class Connection:
    """One client connection; serves requests until the peer closes, asks to close, or is hijacked."""

    def __init__(
        self, sock: socket.socket, extra_headers: list[tuple[str, str]], timeouts: Timeouts | None = None
    ) -> None:
        self.sock = sock
        self.reader = wire.Reader(sock)
        self.timeouts = timeouts or Timeouts()
        self.extra_headers = extra_headers
        self.write_lock = threading.Lock()
        self.close_after = False
        self.linger = False  # input may be left unread: close gently so the client still reads our reply
        self.hijacked = False
        self.head_request = False  # replies to HEAD carry headers only, whatever the handler passes
        self.replied = False  # a status line went out for the current request
        self.streaming = False  # ... and it was a chunked stream's (stream())
        self.host_side = False  # may use /pymachine/... (server.py sets it from the listener that took it)

    # -- reading ----------------------------------------------------------------------------------

    def read_request(self) -> Request | None:
        """The next request's head, or None when the client closed or stayed idle past Timeouts.idle.
        Raises ProtocolError for a malformed or over-long head (the caller answers it and closes)."""
        if not self.reader.wait(self.timeouts.idle):
            return None
        deadline = time.monotonic() + self.timeouts.head
        line = self.reader.readline(wire.MAX_REQUEST_LINE, deadline)
        for _ in range(8):  # tolerate a few stray CRLFs between requests
            if line not in (b"\r\n", b"\n"):
                break
            line = self.reader.readline(wire.MAX_REQUEST_LINE, deadline)
        if not line:
            return None
        self.linger = True  # until the head is complete, an error leaves input unread
        method, target, version = wire.parse_request_line(line)
        headers = Headers()
        budget = wire.MAX_HEADER_BYTES
        for count in range(wire.MAX_HEADERS + 1):
            hline = self.reader.readline(budget + 1, deadline)
            if hline in (b"\r\n", b"\n"):
                break
            if not hline.endswith(b"\n"):
                if len(hline) > budget:
                    raise ProtocolError(431, f"request headers larger than {wire.MAX_HEADER_BYTES} bytes")
                raise ProtocolError(400, "connection closed inside the request headers")
            if count == wire.MAX_HEADERS:
                raise ProtocolError(431, f"more than {wire.MAX_HEADERS} request headers")
            budget -= len(hline)
            headers.add(*wire.parse_header_line(hline))
        length = wire.content_length(headers.get_all("Content-Length"))
        chunked = wire.is_chunked(headers.get_all("Transfer-Encoding"), length is not None)
        self.linger = False
        conn_hdr = (headers.get("Connection") or "").lower()
        if version == (1, 0) and "keep-alive" not in conn_hdr or "close" in conn_hdr:
            self.close_after = True
        self.head_request = method.upper() == "HEAD"
        self.replied = self.streaming = False
        request = Request(method=method.upper(), target=target, headers=headers, conn=self)
        request.content_length, request.chunked = (None if chunked else length), chunked
        return request

    # -- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        try:
            with self.write_lock:
                self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise ClientGone(str(exc)) from None

    def sendfile(self, fd: int, count: int) -> None:
        """`count` bytes of the file `fd` from its start, by sendfile(2): page cache to socket in the kernel.
        OSError (not ClientGone) when the file holds fewer bytes."""
        sent = 0
        try:
            with self.write_lock:
                while sent < count:
                    n = os.sendfile(self.sock.fileno(), fd, sent, count - sent)
                    if n == 0:
                        break
                    sent += n
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ClientGone(str(exc)) from None
        if sent < count:
            raise OSError(f"the file ended after {sent} of {count} bytes")

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        self.replied = True
        lines = [f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}"]
        for name, value in [*self.extra_headers, *headers]:
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = "application/json",
        headers: list[tuple[str, str]] | None = None,
        head_only: bool = False,
    ) -> None:
        hdrs = list(headers or [])
        if content_type and (body or status not in (204, 304)):
            hdrs.append(("Content-Type", content_type))
        if status not in (204, 304):
            hdrs.append(("Content-Length", str(len(body))))
        if self.close_after:
            hdrs.append(("Connection", "close"))
        skip = head_only or self.head_request or status in (204, 304)
        self.write(self._head(status, hdrs) + (b"" if skip else body))

    def send_json(self, status: int, obj: Any, head_only: bool = False) -> None:
        self.send(status, json.dumps(obj).encode() + b"\n", "application/json", head_only=head_only)

    def send_error(self, status: int, message: str) -> None:
        self.send_json(status, {"message": message})

    def stream(self, status: int = 200, content_type: str = "application/json") -> ChunkedWriter:
        """Start a chunked response and flush its headers now (`wait` relies on this)."""
        hdrs = [("Content-Type", content_type), ("Transfer-Encoding", "chunked")]
        self.streaming = True  # may last for ever (logs -f, events, wait): a stopping agent waits not for it
        if self.close_after:
            hdrs.append(("Connection", "close"))
        self.write(self._head(status, hdrs))
        return ChunkedWriter(self)

    def hijack(self, request: Request, content_type: str) -> None:
        """Switch the connection to raw bytes: 101 when the client asked to upgrade, else 200."""
        self.hijacked = True
        self.close_after = True
        if (request.headers.get("Upgrade") or "").lower() in ("tcp", "h2c") or "upgrade" in (
            request.headers.get("Connection") or ""
        ).lower():
            hdrs = [("Content-Type", content_type), ("Connection", "Upgrade"), ("Upgrade", "tcp")]
            self.write(self._head(101, hdrs))
        else:
            self.write(self._head(200, [("Content-Type", content_type)]))

    def wait_peer_read(self, timeout: float = 0.5) -> None:
        """Wait (bounded) until the client has read all we sent: the bytes still in the send queue
        (SIOCOUTQ; on a unix socket they count until the peer reads them) reach 0.

        docker-py reads a hijacked reply's headers through a buffered file and the stream after them from
        the raw socket: output that arrives together with the headers lands in that buffer and is lost
        (`attach(stream=False, logs=True)` returned b"" for a container that had logged, `exec_run("tty",
        tty=True)` b"" under load). dockerd gets away with it by being slower to start the stream; here the
        stream waits for the headers to be read first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                left = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
            except OSError:
                return
            if left == 0:
                return
            time.sleep(0.002)

    def read_raw(self, size: int = 65536) -> bytes:
        """Read hijacked input (no timeout): whatever is buffered first, then the socket. b"" on EOF."""
        try:
            return self.reader.read(size)
        except (OSError, ValueError):
            return b""

    def peer_closed(self) -> bool:
        """True when the client hung up (used by long streams that otherwise only write)."""
        if self.reader.buffered():
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def hang_up(self) -> None:
        """End the connection both ways from any thread. Not close(): the fd number stays ours until the
        serving thread closes it, so no other thread's write can land on a file that reused the number."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        if self.linger and not self.hijacked:
            # Closing with unread input makes the kernel reset the connection, and a reset can destroy our
            # reply before the client reads it: half-close, discard a little, then close (Go does the same).
            self.shutdown_write()
            deadline = time.monotonic() + wire.LINGER_SECONDS
            try:
                for _ in range(64):
                    if not self.reader.read(65536, deadline):
                        break
            except ProtocolError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class ChunkedWriter:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False

    def write(self, data: bytes) -> None:
        if data:
            self.conn.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def sendfile(self, fd: int, count: int) -> None:
        """One chunk of `count` bytes straight from the file `fd` (Connection.sendfile)."""
        if count:
            self.conn.write(f"{count:x}\r\n".encode())
            self.conn.sendfile(fd, count)
            self.conn.write(b"\r\n")

    def write_json(self, obj: Any) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.write(b"0\r\n\r\n")
