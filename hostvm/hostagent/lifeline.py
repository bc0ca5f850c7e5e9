"""The host agent never outlives its machine folder.

A machine deleted behind the agent's back (its folder removed by an older `delete` that did not stop it, or
by hand), or deleted and created again under the same name, must not keep an agent that listens on that
name's sockets and ports: it would bind the published ports of the new machine and forward them to a VM
that is gone. So the agent holds the folder it was started for open and stops itself (exit 0, so that its
supervisor does not start it again) when that folder is deleted or replaced (supervise.MachineFolder).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .supervise import MachineFolder

log = logging.getLogger(__name__)
INTERVAL = 1.0  # seconds between looks: a stat and an exists, nothing to measure


def watch(folder: Path, stopping: threading.Event, stop: Callable[[], None]) -> threading.Thread | None:
    """Start the watch; None when the folder holds no machine (tests that run an agent on a bare folder)."""
    try:
        held = MachineFolder(folder)
    except OSError:
        return None
    if not held.same():
        held.close()
        return None

    def run() -> None:
        while not stopping.wait(INTERVAL):
            if not held.same():
                log.warning("the machine folder %s is gone or replaced: stopping this host agent", folder)
                stop()
                break
        held.close()

    thread = threading.Thread(target=run, name="lifeline", daemon=True)
    thread.start()
    return thread
