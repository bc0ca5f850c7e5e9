"""The seed disk: a plain tar archive attached raw and read-only as /dev/vdb (docs/contracts.md §2).

Chosen over cloud-init (seconds of Python at boot) and over the kernel command line (visible to every process
in /proc/cmdline, and too small for keys): the guest init reads it with one `tar -x` before sshd starts.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

SEED_MTIME = 0  # fixed: the same inputs give the same bytes


def build_seed(
    hostname: str,
    authorized_keys: str,
    host_key_private: bytes,
    host_key_public: str,
    agent_settings: dict[str, Any] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> bytes:
    """The seed tar's bytes; the private host key is the only 0600 member. `mounts` (tag, path, readonly,
    transport per share) is what the guest init mounts before the agent starts."""
    members: list[tuple[str, bytes, int]] = [
        ("hostname", hostname.encode() + b"\n", 0o644),
        ("authorized_keys", _line(authorized_keys), 0o600),
        ("ssh_host_ed25519_key", host_key_private, 0o600),
        ("ssh_host_ed25519_key.pub", _line(host_key_public), 0o644),
        ("agent.json", json.dumps(agent_settings or {}, sort_keys=True).encode() + b"\n", 0o644),
    ]
    if mounts:
        members.append(("mounts.json", json.dumps(mounts, sort_keys=True).encode() + b"\n", 0o644))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, SEED_MTIME
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()  # tarfile pads to whole 10 KiB records: a valid size for a raw block device


def write_seed(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_seed(data: bytes) -> dict[str, bytes]:
    """Member name → content (used by tests and `inspect`-style debugging)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            out[member.name] = fh.read() if fh else b""
    return out


def _line(text: str) -> bytes:
    return text.strip().encode() + b"\n"
