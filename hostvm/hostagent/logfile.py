"""The host agent's log (ha.log) rotates by size: an agent runs for weeks, and a link that flaps or a guest
that restarts its engine in a loop writes a line every few seconds. One old file is kept (ha.log.1)."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 1


def rotating_log(path: Path) -> logging.Handler:
    """`PYMACHINE_LOG_MAX_BYTES` overrides the size (tests make it small)."""
    limit = int(os.environ.get("PYMACHINE_LOG_MAX_BYTES") or MAX_BYTES)
    return logging.handlers.RotatingFileHandler(path, maxBytes=limit, backupCount=BACKUPS)
