"""Helpers for runtime tests: specs on the busybox rootfs, running to completion, reading attach frames."""

from __future__ import annotations

import os
import struct
import time
import uuid
from pathlib import Path

from pymachine_agent.runtime import ContainerSpec, Runtime


def new_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def spec(layer: Path, argv: list[str], **kw: object) -> ContainerSpec:
    cid = new_id()
    kw.setdefault("name", "t-" + cid[:8])
    kw.setdefault("network", "none")
    return ContainerSpec(id=cid, layers=[str(layer)], argv=argv, **kw)  # type: ignore[arg-type]


def output(rt: Runtime, cid: str) -> tuple[str, str]:
    out = err = b""
    for e in rt.logs(cid):
        if e.stream == "stdout":
            out += e.data
        else:
            err += e.data
    return out.decode(), err.decode()


def run(rt: Runtime, layer: Path, argv: list[str], **kw: object) -> tuple[int, str, str]:
    """create + start + wait; returns (exit code, stdout, stderr) from the json-file log."""
    s = spec(layer, argv, **kw)
    rt.create(s)
    rt.start(s.id)
    res = rt.wait(s.id, timeout=60)
    out, err = output(rt, s.id)
    return res.exit_code, out, err


def read_frames(sock_recv, timeout: float = 30) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    """Parse Docker attach frames until EOF: {1: stdout bytes, 2: stderr bytes}."""
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        chunk = sock_recv(65536)
        if not chunk:
            break
        buf += chunk
    got: dict[int, bytes] = {1: b"", 2: b""}
    while len(buf) >= 8:
        stream, size = struct.unpack(">BxxxL", buf[:8])
        got[stream] += buf[8 : 8 + size]
        buf = buf[8 + size :]
    assert not buf, "a torn frame at the end of the stream"
    return got


def read_fd_until_exit(fd: int, proc, timeout: float = 30) -> bytes:  # type: ignore[no-untyped-def]
    """Read a pty master or pipe until EOF/EIO."""
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
