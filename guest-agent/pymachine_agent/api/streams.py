"""stdcopy framing and the pumps that join a hijacked connection to a container's stdio."""

from __future__ import annotations

import logging
import struct
import threading
from typing import Protocol

from ..stdio import Detached
from .http import ClientGone, Connection, Request

log = logging.getLogger("pymachine_agent.api")

MUX = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
STDIN, STDOUT, STDERR, SYSERR = 0, 1, 2, 3


def frame(stream: int, data: bytes) -> bytes:
    """One pkg/stdcopy frame: [stream, 0, 0, 0, len_be32] + payload."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def deframe(data: bytes) -> list[tuple[int, bytes]]:
    """Split a buffer of complete frames (used by tests and the exec client)."""
    out = []
    while len(data) >= 8:
        stream, length = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8 : 8 + length]))
        data = data[8 + length :]
    return out


class StdioSession(Protocol):
    """What the engine hands the API for attach and exec (see pymachine_agent/stdio.py)."""

    tty: bool

    def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def read(self) -> bytes | None:
        """Next output, already in wire form (frames without a TTY); None when the process ended."""
        ...

    def close(self) -> None: ...


def pump_hijacked(request: Request, session: StdioSession, stdin: bool) -> None:
    """Hijack `request`'s connection and copy both ways until the output ends.

    Without a TTY output is framed per stream; with one it is raw. After the client half-closes (stdin
    EOF) we keep writing output until the process is done, then close — the CLI waits for that close.
    """
    conn: Connection = request.conn
    conn.hijack(request, RAW if session.tty else MUX)
    # output must not arrive in the same read as the headers: a log replay is ready at once, and a quick exec
    # (`tty`, `id`) answers within a millisecond; docker-py lost both (Connection.wait_peer_read)
    conn.wait_peer_read()
    if stdin:
        threading.Thread(target=_copy_stdin, args=(conn, session), daemon=True).start()
    try:
        while True:
            data = session.read()
            if data is None:
                break
            conn.write(data)
    except ClientGone:
        pass
    finally:
        session.close()
        conn.shutdown_write()


def _copy_stdin(conn: Connection, session: StdioSession) -> None:
    try:
        while True:
            data = conn.read_raw()
            if not data:
                break
            session.write_stdin(data)
    except Detached:
        # the detach keys: this client goes, the container keeps running with its stdin open (no EOF)
        session.close()
        conn.hang_up()
        return
    except Exception as exc:  # a dead container stdin must not kill the output side
        log.debug("stdin copy ended: %s", exc)
    session.close_stdin()
