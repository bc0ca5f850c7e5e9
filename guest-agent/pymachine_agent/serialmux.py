"""The engine socket over virtio-serial: frames and a multiplexer both ends speak (pure: no I/O of its own).

One virtio-serial port (`org.pymachine.engine`) joins the host agent and the guest agent on a local machine. A
port is one byte stream with none of a connection's edges (the host cannot half-close, a client queued in
QEMU's backlog takes over the stream without the guest seeing a hangup, the guest's close is invisible to the
host: docs/hostagent.md, "A channel without TCP"), so every docker.sock connection is a channel of its own:

    frame = type (1) | channel (4) | length (4) | payload (length ≤ MAX_PAYLOAD), big-endian

    HELLO  channel 0, MAGIC | nonce (8) | flag (1). Host → guest at each (re)connect with flag NEW: the guest
           drops every channel and echoes it with FRESH. The host trusts nothing it reads before the echo of
           its own latest nonce. With flag CHECK (the host saw the guest agent say hello on its event stream:
           it may have restarted) a guest in that very session keeps its channels and answers KEPT; a new
           guest agent starts the session and answers FRESH, and the host drops the channels opened before.
    OPEN   host → guest opens a channel (ids only grow within a hello); guest → host accepts it.
    DATA   bytes of the connection, at most the sender's credit for that channel.
    EOF    the sender will send no more DATA on the channel (a half-close: attach, hijacked streams).
    CLOSE  the sender drops the channel (the other end's reads see EOF, its writes fail).
    CREDIT 4 bytes: the receiver consumed that many more bytes of the channel (a window per channel, so
           a stalled `logs -f` cannot hold up a `load` that shares the port).

Type 0 is not a frame but one byte of padding. A hello is sent after MAX_FRAME zero bytes, so whatever
partial frame a dead predecessor left in the stream ends inside the padding and the hello starts on a frame
boundary. Anything malformed (an unknown type, a length over MAX_PAYLOAD, DATA beyond the credit) resets the
link: every channel is dropped and the decoder scans for the next hello; it never raises into the caller.
`Mux.write` is the caller's: it writes one whole frame (≤ MAX_FRAME bytes), raising OSError when it cannot.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Callable

HEADER = struct.Struct(">BII")
PAD, HELLO, OPEN, DATA, EOF, CLOSE, CREDIT = range(7)
NAMES = {HELLO: "HELLO", OPEN: "OPEN", DATA: "DATA", EOF: "EOF", CLOSE: "CLOSE", CREDIT: "CREDIT"}
RESET = -1  # Decoder's marker: the stream was garbage here (payload: the reason)
MAX_FRAME = 32 * 1024  # one write of ≤ 32 KiB per frame in the guest (the port's buffers are 4 KiB pages)
MAX_PAYLOAD = MAX_FRAME - HEADER.size
WINDOW = 512 * 1024  # per channel and direction, as SSH's windows
MAGIC = b"PMSER01\n"
NONCE_LEN = 8
HELLO_LEN = len(MAGIC) + NONCE_LEN + 1
NEW, CHECK = 0, 1  # host → guest
FRESH, KEPT = 0, 1  # guest → host
PORT_NAME = "org.pymachine.engine"
_HELLO_HEAD = HEADER.pack(HELLO, 0, HELLO_LEN) + MAGIC
Frame = tuple[int, int, bytes]


def frame(kind: int, channel: int, payload: bytes | memoryview = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes")
    return HEADER.pack(kind, channel, len(payload)) + bytes(payload)


def hello(nonce: bytes, flag: int = NEW) -> bytes:
    """The padding and the HELLO frame a host sends at each (re)connect."""
    return bytes(MAX_FRAME) + frame(HELLO, 0, MAGIC + nonce + bytes([flag]))


class Decoder:
    """Bytes in, frames out. Unsynced (at the start and after garbage) it looks only for a hello."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.synced = False

    def unsync(self) -> None:
        self.synced = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self.buf += data
        out: list[Frame] = []
        buf = self.buf
        at = 0
        while True:
            if not self.synced:
                found = buf.find(_HELLO_HEAD, at)
                if found < 0:  # keep a tail that may be the start of a hello
                    at = max(at, len(buf) - len(_HELLO_HEAD) + 1)
                    break
                at, self.synced = found, True
            if at < len(buf) and buf[at] == PAD:
                end = at
                while end < len(buf) and buf[end] == PAD:
                    end += 1
                at = end
                continue
            if len(buf) - at < HEADER.size:
                break
            kind, channel, length = HEADER.unpack_from(buf, at)
            if kind not in NAMES or length > MAX_PAYLOAD:
                why = f"bad frame header (type {kind}, length {length})"
                out.append((RESET, channel, why.encode()))
                self.synced = False
                at += 1
                continue
            if len(buf) - at - HEADER.size < length:
                break
            start = at + HEADER.size
            out.append((kind, channel, bytes(buf[start : start + length])))
            at = start + length
        del buf[:at]
        return out


class LinkDown(ConnectionError):
    """The channel's link was reset (the other end reconnected, garbage, the port closed)."""


class Channel:
    """One connection over the port: the socket-like methods hostagent/pump.py and the guest's bridge use."""

    def __init__(self, mux: Mux, cid: int, opened: bool = False) -> None:
        self.mux = mux
        self.id = cid
        self.cond = threading.Condition()
        self.opened = opened
        self.chunks: deque[bytes] = deque()
        self.buffered = 0  # bytes received, not yet taken by recv
        self.unreported = 0  # bytes taken by recv, not yet given back as CREDIT
        self.credit = mux.window  # how many more bytes we may send
        self.remote_eof = False
        self.remote_closed = False
        self.eof_sent = False
        self.closed = False
        self.dead = False  # the link was reset under it

    # -- called by the Mux (reader thread) ----------------------------------------------------------------
    def _data(self, payload: bytes) -> bool:
        with self.cond:
            if self.remote_eof or self.buffered + self.unreported + len(payload) > self.mux.window:
                return False  # beyond the credit we gave, or after EOF: the peer broke the protocol
            if payload:
                self.chunks.append(payload)
                self.buffered += len(payload)
            self.cond.notify_all()
        return True

    def _event(self, **changes: object) -> None:
        with self.cond:
            for key, value in changes.items():
                if key == "credit":
                    self.credit += int(value)  # type: ignore[call-overload]
                else:
                    setattr(self, key, value)
            self.cond.notify_all()

    # -- the socket-like side ------------------------------------------------------------------------------
    def recv(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the peer's EOF or CLOSE, or when the link was reset."""
        with self.cond:
            while not self.chunks and not (self.remote_eof or self.remote_closed or self.dead or self.closed):
                self.cond.wait()
            if not self.chunks:
                return b""
            first = self.chunks.popleft()
            if len(first) > size:
                self.chunks.appendleft(first[size:])
                first = first[:size]
            self.buffered -= len(first)
            self.unreported += len(first)
            give = 0
            if self.unreported >= self.mux.window // 4 and not (self.remote_eof or self.dead or self.closed):
                give, self.unreported = self.unreported, 0
        if give:
            try:
                self.mux.send(CREDIT, self.id, struct.pack(">I", give))
            except OSError:
                pass  # the link went: the reader resets every channel
        return first

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            with self.cond:
                while self.credit <= 0 and not (self.remote_closed or self.dead or self.closed):
                    self.cond.wait()
                if self.remote_closed or self.closed or self.eof_sent:
                    raise BrokenPipeError(f"channel {self.id} is closed")
                if self.dead:
                    raise LinkDown(f"channel {self.id}: the link was reset")
                n = min(self.credit, MAX_PAYLOAD, len(view))
                self.credit -= n
            self.mux.send(DATA, self.id, view[:n])
            view = view[n:]

    def shutdown_write(self) -> None:
        with self.cond:
            if self.eof_sent or self.closed or self.dead or self.remote_closed:
                return
            self.eof_sent = True
        self.mux.send(EOF, self.id)

    def close(self) -> None:
        with self.cond:
            if self.closed:
                return
            self.closed = True
            tell = not (self.dead or self.remote_closed)
            self.cond.notify_all()
        self.mux.forget(self)
        if tell:
            try:
                self.mux.send(CLOSE, self.id)
            except OSError:
                pass


class Mux:
    """One end of the link. `role` "host" opens channels and says hello; "guest" accepts and echoes.
    `feed` is called with the bytes read from the port (one reader thread); `write` writes one frame."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        role: str,
        on_open: Callable[[Channel], None] = lambda ch: None,
        on_state: Callable[[str, str], None] = lambda state, why: None,
        window: int = WINDOW,
    ) -> None:
        if role not in ("host", "guest"):
            raise ValueError("role is host or guest")
        self.role = role
        self._write = write
        self.on_open = on_open  # guest: a new channel, already accepted (serve it on a thread of its own)
        self.on_state = on_state  # ("up" | "down", reason)
        self.window = window
        self.decoder = Decoder()
        self._lock = threading.Lock()
        self._wlock = threading.Lock()
        self.channels: dict[int, Channel] = {}
        self.synced = False  # host: our latest hello was echoed; guest: a hello arrived
        self.nonce = b""  # host: of our latest hello; guest: of the session it is in
        # a host's ids start at random: a frame of a dropped session's channel that a guest thread wrote just
        # after the echo names no channel of the new session
        self.next_id = 1 + int.from_bytes(os.urandom(3), "big")
        self._check_mark = 0  # host: the first channel id opened after the latest CHECK
        self.resets = 0
        self.last_reset = ""

    # -- writing -------------------------------------------------------------------------------------------
    def send(self, kind: int, channel: int, payload: bytes | memoryview = b"") -> None:
        data = frame(kind, channel, payload)
        with self._wlock:  # frames never interleave
            self._write(data)

    # -- the link's life -----------------------------------------------------------------------------------
    def hello(self, nonce: bytes | None = None) -> None:
        """Host: drop every channel and say hello with a fresh nonce; `up` once the guest echoed it."""
        self.reset("a new hello")
        self.nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
        self.decoder.unsync()
        self._write_hello(NEW)

    def check(self) -> None:
        """Host: is the guest still in our session? (its agent said hello on the event stream: it may be a new
        one). A guest in it keeps every channel; a new one starts the session, and the channels opened before
        this are dropped when its answer says so. Not up: a plain hello."""
        with self._lock:
            synced = self.synced
            self._check_mark = self.next_id
        if not synced:
            self.hello()
            return
        self._write_hello(CHECK)

    def _write_hello(self, flag: int) -> None:
        data = hello(self.nonce, flag)
        with self._wlock:
            for at in range(0, len(data), MAX_FRAME):
                self._write(data[at : at + MAX_FRAME])

    def reset(self, why: str) -> None:
        """Drop every channel (their reads see EOF, their writes fail): the link starts over."""
        with self._lock:
            was, self.synced = self.synced, False
            channels, self.channels = list(self.channels.values()), {}
        for ch in channels:
            ch._event(dead=True)
        if was or channels:
            self.resets += 1
            self.last_reset = why
            self.on_state("down", why)

    def forget(self, ch: Channel) -> None:
        with self._lock:
            if self.channels.get(ch.id) is ch:
                del self.channels[ch.id]

    # -- reading -------------------------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        for kind, cid, payload in self.decoder.feed(data):
            if kind == RESET:
                self._violation(f"garbage on the port: {payload.decode()}")
                continue
            if kind == HELLO:
                self._on_hello(payload)
                continue
            if not self.synced:
                continue  # the host reads nothing before its hello's echo
            with self._lock:
                ch = self.channels.get(cid)
            if kind == OPEN:
                self._on_open(cid, ch)
            elif ch is None:
                continue  # a channel already closed here: its late frames are void
            elif kind == DATA:
                if not ch._data(payload):
                    self._violation(f"channel {cid}: DATA beyond its credit or after EOF")
            elif kind == EOF:
                ch._event(remote_eof=True)
            elif kind == CLOSE:
                self.forget(ch)
                ch._event(remote_closed=True)
            elif kind == CREDIT:
                if len(payload) != 4:
                    self._violation(f"channel {cid}: a CREDIT of {len(payload)} bytes")
                else:
                    ch._event(credit=struct.unpack(">I", payload)[0])

    def _violation(self, why: str) -> None:
        """A malformed stream: drop everything and wait for (guest) or say (host) a new hello. A host still
        waiting for its echo only scans on: stale bytes before the echo are expected."""
        was = self.synced
        self.reset(why)
        self.decoder.unsync()
        if self.role == "host" and was:
            self._try(self.hello)

    def _on_hello(self, payload: bytes) -> None:
        if len(payload) != HELLO_LEN or payload[: len(MAGIC)] != MAGIC:
            return
        nonce, flag = payload[len(MAGIC) : -1], payload[-1]
        if self.role == "host":
            if nonce != self.nonce:
                return  # the echo of an earlier hello
            if not self.synced:
                self.synced = True
            elif flag == FRESH:  # a new guest agent answered our CHECK: what was open before is gone
                with self._lock:
                    stale = [ch for cid, ch in self.channels.items() if cid < self._check_mark]
                    for ch in stale:
                        del self.channels[ch.id]
                for ch in stale:
                    ch._event(dead=True)
                if stale:
                    self.resets += 1
                    self.last_reset = "the guest agent restarted"
            self.on_state("up", "")  # (again: the answer to a CHECK says the guest reads the port)
            return
        if flag == CHECK and self.synced and nonce == self.nonce:
            self._try(lambda: self.send(HELLO, 0, MAGIC + nonce + bytes([KEPT])))
            return
        self.reset("the host said hello")
        self.nonce, self.synced = nonce, True
        self._try(lambda: self.send(HELLO, 0, MAGIC + nonce + bytes([FRESH])))
        self.on_state("up", "")

    def _on_open(self, cid: int, ch: Channel | None) -> None:
        if self.role == "host":
            if ch is not None:
                ch._event(opened=True)
            return
        if ch is not None or cid == 0:
            self._violation(f"channel {cid} opened twice")
            return
        ch = Channel(self, cid, opened=True)
        with self._lock:
            self.channels[cid] = ch
        try:
            self.send(OPEN, cid)
        except OSError:
            return
        self.on_open(ch)

    def _try(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError:
            pass  # the port went away: the reader sees it and resets

    # -- the host opens channels ---------------------------------------------------------------------------
    def open(self, timeout: float) -> Channel:
        """A new channel, accepted by the guest within `timeout`; LinkDown otherwise (take another path)."""
        with self._lock:
            if not self.synced:
                raise LinkDown("the port is not up")
            cid, self.next_id = self.next_id, self.next_id + 1
            ch = Channel(self, cid)
            self.channels[cid] = ch
        self.send(OPEN, cid)
        with ch.cond:
            ch.cond.wait_for(lambda: ch.opened or ch.remote_closed or ch.dead, timeout)
            ok = ch.opened and not ch.dead
        if not ok:
            ch.close()
            raise LinkDown(f"the guest did not accept channel {cid} within {timeout:g} s")
        return ch
