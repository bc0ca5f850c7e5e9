"""The host ↔ guest protocol: version and the checksum of the agent's own sources.

The host reads this module as data (it imports the copy it ships) and compares `source_checksum()` with the
guest's answer to `GET /pymachine/v1/info`, re-provisioning the agent when they differ, so that host and guest
never drift apart across upgrades. See docs/contracts.md §4.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.1.0"
API_PREFIX = "/pymachine/v1"

_PACKAGE_ROOT = Path(__file__).resolve().parent


def source_files(root: Path = _PACKAGE_ROOT) -> list[Path]:
    """The files that make up the agent (what gets copied into the guest)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json")
    )


def source_checksum(root: Path = _PACKAGE_ROOT) -> str:
    """sha256 over relative paths and contents of every agent source file, stable across machines."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
