"""The seed tar (docs/contracts.md §2): members, modes, determinism."""

from __future__ import annotations

import io
import json
import tarfile

from pymachine.hostvm.seed import build_seed, read_seed


def _seed() -> bytes:
    return build_seed(
        "dev", "ssh-ed25519 AAAA client", b"PRIVATE\n", "ssh-ed25519 BBBB host", {"machine": "dev"}
    )


def test_members_and_contents() -> None:
    members = read_seed(_seed())
    assert members == {
        "hostname": b"dev\n",
        "authorized_keys": b"ssh-ed25519 AAAA client\n",
        "ssh_host_ed25519_key": b"PRIVATE\n",
        "ssh_host_ed25519_key.pub": b"ssh-ed25519 BBBB host\n",
        "agent.json": b'{"machine": "dev"}\n',
    }
    assert json.loads(members["agent.json"]) == {"machine": "dev"}


def test_private_key_is_0600_and_size_fits_a_block_device() -> None:
    data = _seed()
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["ssh_host_ed25519_key"] == 0o600
    assert modes["authorized_keys"] == 0o600
    assert modes["hostname"] == 0o644


def test_deterministic() -> None:
    assert _seed() == _seed()
    assert read_seed(build_seed("x", "k", b"p", "h"))["agent.json"] == b"{}\n"
