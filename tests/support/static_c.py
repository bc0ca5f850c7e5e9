"""Static test helpers for containers (Debian's busybox-static lacks some servers), built from a C file
next to this module with the host's gcc and cached by source hash in the shared test cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from support import SHARED_CACHE


def static_binary(source: Path, name: str) -> Path | None:
    """`source` compiled statically (cached), or None when this host has no C compiler with a static libc."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = SHARED_CACHE / f"{name}-{digest}"
    if out.exists():
        return out
    if not shutil.which("gcc"):
        return None
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp), str(source)], capture_output=True)
    if proc.returncode != 0:
        return None
    os.replace(tmp, out)
    return out


def udp_echo_binary() -> Path | None:
    """`udp_echo PORT` (udp_echo.c): prints `listening`, then answers each datagram with `echo:` + it."""
    return static_binary(Path(__file__).with_name("udp_echo.c"), "udp-echo")


def unix_http_binary() -> Path | None:
    """`unix_http SOCKET METHOD PATH [JSON]` (unix_http.c): one HTTP/1.0 request; prints the response."""
    return static_binary(Path(__file__).with_name("unix_http.c"), "unix-http")
