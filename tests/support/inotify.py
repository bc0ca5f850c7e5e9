"""`inotify_watch`: a static inotify watcher for containers (Debian's busybox-static has no inotifyd), built
from tests/support/inotify_watch.c with the host's gcc and cached by source hash. It prints `watching` once
its watches are set, then `<mask in hex> <name>` per event."""

from __future__ import annotations

from pathlib import Path

from support.static_c import static_binary

SOURCE = Path(__file__).with_name("inotify_watch.c")
IN_ATTRIB = 0x4
IN_OPEN = 0x20


def inotify_watch_binary() -> Path | None:
    """The compiled watcher, or None when this host has no C compiler with a static libc."""
    return static_binary(SOURCE, "inotify-watch")


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
