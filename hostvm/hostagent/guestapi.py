"""A minimal HTTP/1.1 client over one SSH channel, for the host ↔ guest protocol (docs/contracts.md §4).

The host agent talks to the guest agent's socket directly over channels (not through its own docker.sock):
three calls — info, the long-lived event stream, and acks — so a dozen lines of HTTP beat pulling a client
library into the agent's hot path. Container verbs use docker-py through docker.sock instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from paramiko.channel import Channel

API = "/pymachine/v1"


class GuestApiError(Exception):
    pass


class ChannelReader:
    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.buf = b""

    def _fill(self) -> bool:
        data = self.chan.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill():
                line, self.buf = self.buf, b""
                return line
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_all(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


def _send(chan: Channel, method: str, path: str, body: dict[str, Any] | None) -> None:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: pymachine\r\nConnection: close\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    chan.sendall(head.encode() + payload)


def _read_head(reader: ChannelReader) -> tuple[int, dict[str, str]]:
    status_line = reader.readline().decode("latin-1").strip()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise GuestApiError(f"the guest agent sent no HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = reader.readline().decode("latin-1")
        if not line or line in ("\r\n", "\n"):
            break
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _body_chunks(reader: ChannelReader, headers: dict[str, str]) -> Iterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield reader.read(size)
            reader.readline()
    elif "content-length" in headers:
        yield reader.read(int(headers["content-length"]))
    else:
        yield reader.read_all()


def request(chan: Channel, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request on a fresh channel (closed afterwards): (status, decoded JSON body or text)."""
    try:
        _send(chan, method, path, body)
        reader = ChannelReader(chan)
        status, headers = _read_head(reader)
        data = b"".join(_body_chunks(reader, headers))
    finally:
        chan.close()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data.decode(errors="replace")


def stream_events(
    chan: Channel, idle: float = 0.5, path: str = API + "/events"
) -> Iterator[dict[str, Any] | None]:
    """The guest's event stream as JSON objects; yields None after `idle` seconds without a line (the
    caller uses that to close a resync), and returns when the stream ends. (`path`: dockerd's /events on a
    cluster node, the same JSON-lines shape.)"""
    _send(chan, "GET", path, None)
    reader = ChannelReader(chan)
    status, headers = _read_head(reader)
    if status != 200:
        raise GuestApiError(f"GET {path} answered {status}")
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    pending = b""
    chan.settimeout(idle)
    # Chunk parsing is a small state machine so an idle timeout can strike anywhere without losing place:
    # the reader keeps partial bytes, `size`/`need_crlf` remember what comes next.
    size: int | None = None
    need_crlf = False
    while True:
        try:
            if chunked:
                if need_crlf:
                    reader.readline()
                    need_crlf = False
                if size is None:
                    size_line = reader.readline()
                    if not size_line:
                        return
                    if not size_line.strip():
                        continue
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        return
                data = reader.read(size)
                if len(data) < size:
                    return
                size, need_crlf = None, True
            else:
                data = reader.buf or reader.chan.recv(65536)
                reader.buf = b""
                if not data:
                    return
        except TimeoutError:
            yield None
            continue
        pending += data
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    yield obj
