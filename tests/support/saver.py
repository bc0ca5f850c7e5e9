"""Measurements for the resource saver's tests and bench (tests/vm/test_saver_vm.py, bench/saver.py): QEMU's
CPU time and RSS from /proc, a qcow2's allocated bytes, and a 100 MiB image to load and delete."""

from __future__ import annotations

import os
from pathlib import Path

from support.random_image import random_image_archive

MiB = 1024 * 1024


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_bytes(pid: int) -> int:
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def big_image_tar(path: Path, size: int = 100 * MiB) -> Path:
    """A docker-archive of one layer holding `size` random bytes (incompressible), tagged saver/big:1."""
    random_image_archive(path, size, tag="saver/big:1")
    return path
