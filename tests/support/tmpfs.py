"""A tmpfs mounted on a test's folder for as long as the test needs it (privileged tier: root)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs_on(folder: Path, size: str = "1m", source: str = "tmpfs") -> Iterator[Path]:
    """Mount a tmpfs of `size` on `folder` (made if missing); lazily unmounted afterwards, even if a test
    unmounted it already or left files open there."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", source, str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
