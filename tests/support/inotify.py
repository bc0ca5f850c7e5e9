"""`inotify_watch`: a static inotify watcher for containers (Debian's busybox-static has no inotifyd), built
from tests/support/inotify_watch.c with the host's gcc and cached by source hash. It prints `watching` once
its watches are set, then `<mask in hex> <name>` per event."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("inotify_watch.c")
CACHE = Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
IN_ATTRIB = 0x4
IN_OPEN = 0x20


def inotify_watch_binary() -> Path | None:
    """The compiled watcher, or None when this host has no C compiler with a static libc."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = CACHE / f"inotify-watch-{digest}"
    if out.exists():
        return out
    if not shutil.which("gcc"):
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True)
    if proc.returncode != 0:
        return None
    os.replace(tmp, out)
    return out


def events(log: str) -> list[tuple[int, str]]:
    """(mask, name) of every event line in the watcher's output."""
    out = []
    for line in log.splitlines():
        mask, _, name = line.partition(" ")
        try:
            out.append((int(mask, 16), name))
        except ValueError:
            continue
    return out
