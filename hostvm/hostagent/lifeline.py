"""The host agent never outlives its machine folder.

A machine deleted behind the agent's back (its folder removed by an older `delete` that did not stop it, or
by hand), or deleted and created again under the same name, must not keep an agent that listens on that
name's sockets and ports: it would bind the published ports of the new machine and forward them to a VM
that is gone. So the agent watches the folder it was started for, by identity (device and inode, with a
config.json in it), and stops itself (exit 0, so its supervisor does not start it again) when that changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .supervise import folder_identity

log = logging.getLogger(__name__)
INTERVAL = 1.0  # seconds between looks: a stat and an exists, nothing to measure


def watch(folder: Path, stopping: threading.Event, stop: Callable[[], None]) -> threading.Thread | None:
    """Start the watch; None when the folder holds no machine (tests that run an agent on a bare folder)."""
    identity = folder_identity(folder)
    if identity is None:
        return None

    def run() -> None:
        while not stopping.wait(INTERVAL):
            if folder_identity(folder) != identity:
                log.warning("the machine folder %s is gone or replaced: stopping this host agent", folder)
                stop()
                return

    thread = threading.Thread(target=run, name="lifeline", daemon=True)
    thread.start()
    return thread
