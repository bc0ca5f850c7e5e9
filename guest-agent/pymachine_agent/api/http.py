"""A small HTTP/1.1 server connection: request parsing, responses, chunked streams and hijacking.

Why not `http.server`: the Docker API needs chunked *request* bodies (`docker build`), connection hijack
after `101 UPGRADED` reading from the same buffered reader the parser used, and half-close. Owning the
parser keeps those three exact.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEADER_LINE = 65536
MAX_HEADERS = 200

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
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HTTPError(Exception):
    """An error reply: `{"message": ...}` with a Docker status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadRequest(Exception):
    """The bytes on the wire are not HTTP we understand; the connection is dropped."""


class ClientGone(Exception):
    """The peer closed the connection while we were writing."""


class Headers:
    """Case-insensitive header map that keeps the last value."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}

    def add(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self._items.get(name.lower())
        return item[1] if item else default

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
    _body: bytes | None = None
    body_consumed: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            self.query[key] = value
            self.query_all.setdefault(key, []).append(value)

    # -- body -------------------------------------------------------------------------------------

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def iter_body(self, size: int = 65536):  # type: ignore[no-untyped-def]
        """Yield the request body in pieces (for large uploads: image load, build contexts, archives)."""
        if self.body_consumed:
            if self._body:
                yield self._body
            return
        self.body_consumed = True
        rfile = self.conn.rfile
        if self.chunked:
            while True:
                line = rfile.readline(MAX_HEADER_LINE)
                if not line:
                    raise BadRequest("connection closed inside a chunked body")
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    # trailers until the blank line
                    while True:
                        trailer = rfile.readline(MAX_HEADER_LINE)
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                while length > 0:
                    piece = rfile.read(min(size, length))
                    if not piece:
                        raise BadRequest("connection closed inside a chunk")
                    length -= len(piece)
                    yield piece
                rfile.readline(MAX_HEADER_LINE)  # CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                piece = rfile.read(min(size, remaining))
                if not piece:
                    raise BadRequest("connection closed inside the body")
                remaining -= len(piece)
                yield piece

    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> Any:
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HTTPError(400, f"invalid JSON body: {exc}") from None

    def drain(self) -> None:
        """Consume an unread body so the next request on this keep-alive connection parses."""
        if not self.body_consumed:
            for _ in self.iter_body():
                pass

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


class Connection:
    """One client connection; serves requests until the peer closes, asks to close, or is hijacked."""

    def __init__(self, sock: socket.socket, extra_headers: list[tuple[str, str]]) -> None:
        self.sock = sock
        self.rfile: BinaryIO = sock.makefile("rb", buffering=65536)
        self.extra_headers = extra_headers
        self.write_lock = threading.Lock()
        self.close_after = False
        self.hijacked = False
        self.head_request = False  # replies to HEAD carry headers only, whatever the handler passes
        self.replied = False  # a status line went out for the current request

    # -- reading ----------------------------------------------------------------------------------

    def read_request(self) -> Request | None:
        line = self.rfile.readline(MAX_HEADER_LINE)
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = self.rfile.readline(MAX_HEADER_LINE)
        if not line:
            return None
        try:
            method, target, version = line.decode("latin-1").strip().split(" ", 2)
        except ValueError:
            raise BadRequest(f"bad request line {line[:100]!r}") from None
        headers = Headers()
        for _ in range(MAX_HEADERS):
            hline = self.rfile.readline(MAX_HEADER_LINE)
            if hline in (b"\r\n", b"\n", b""):
                break
            name, _, value = hline.decode("latin-1").partition(":")
            headers.add(name.strip(), value.strip())
        else:
            raise BadRequest("too many headers")
        conn_hdr = (headers.get("Connection") or "").lower()
        if version == "HTTP/1.0" and "keep-alive" not in conn_hdr or "close" in conn_hdr:
            self.close_after = True
        self.head_request = method.upper() == "HEAD"
        self.replied = False
        return Request(method=method.upper(), target=target, headers=headers, conn=self)

    # -- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        try:
            with self.write_lock:
                self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise ClientGone(str(exc)) from None

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

    def read_raw(self, size: int = 65536) -> bytes:
        """Read hijacked input: whatever is buffered first, then the socket. b"" on EOF/half-close."""
        try:
            return self.rfile.read1(size)  # type: ignore[attr-defined]
        except (ConnectionResetError, OSError, ValueError):
            return b""

    def peer_closed(self) -> bool:
        """True when the client hung up (used by long streams that otherwise only write)."""
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

    def close(self) -> None:
        try:
            self.rfile.close()
        except OSError:
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

    def write_json(self, obj: Any) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.write(b"0\r\n\r\n")
