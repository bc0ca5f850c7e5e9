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


def watch(folder: Path, stopping: threading.Event, stop: Callable[[], None]) -> threading.Thread:
    """Start the watch. Its first look is at once: a folder replaced before this agent started is not its
    own either (its supervisor hands down the identity it started for: supervise.FOLDER_ID_ENV)."""
    try:
        held: MachineFolder | None = MachineFolder(folder)
    except OSError:
        held = None

    def run() -> None:
        while True:
            if held is None or not held.same():
                log.warning("the machine folder %s is gone or replaced: stopping this host agent", folder)
                stop()
                break
            if stopping.wait(INTERVAL):
                break
        if held is not None:
            held.close()

    thread = threading.Thread(target=run, name="lifeline", daemon=True)
    thread.start()
    return thread
