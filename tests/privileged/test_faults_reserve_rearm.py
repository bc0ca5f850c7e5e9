"""The engine's space reserve (guest-agent reserve.py) comes back once the disk has room again, in the same
agent's life (issue 16): a disk filled, emptied and filled again still lets the engine write its own state.
Before, the reserve given back at the first fill stayed gone until the agent restarted, and on the second fill
`docker rm` of the filler failed with ENOSPC (seen in tests/vm/test_faults_host.py run twice on one machine).
Real files on a real small tmpfs (needs root to mount it)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tmpfs import tmpfs_on

from pymachine_agent import atomic, reserve


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_on(tmp_path / "state", "80m") as folder:
        yield folder


def fill(folder: Path) -> Path:
    """A file that takes every free block of `folder`'s filesystem (what a container's dd does)."""
    path = folder / "filler"
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return path


def write_on_a_full_disk(folder: Path, name: str) -> None:
    filler = fill(folder)
    try:
        atomic.write_json(folder / name, {"removing": True})  # the reserve makes room for it
        assert (folder / name).exists()
    finally:
        filler.unlink()  # `docker rm` of the filler


def test_the_reserve_comes_back_for_a_second_fill(state: Path) -> None:
    reserve.arm(state)
    assert (state / reserve.NAME).stat().st_size == reserve.RESERVE_BYTES
    for round_ in ("first fill", "second fill"):
        write_on_a_full_disk(state, f"state-{round_}.json")
        assert not (state / reserve.NAME).exists()  # given back for that write
        atomic.write_json(state / "next.json", {"after": round_})  # the next record, with room again
        assert (state / reserve.NAME).stat().st_size == reserve.RESERVE_BYTES, round_


def test_an_agent_started_on_a_full_disk_gets_its_reserve_once_there_is_room(state: Path) -> None:
    filler = fill(state)
    reserve.arm(state)  # the agent's start on the full disk: no room for a reserve
    assert not (state / reserve.NAME).exists()
    filler.unlink()
    atomic.write_json(state / "record.json", {})
    assert (state / reserve.NAME).stat().st_size == reserve.RESERVE_BYTES
    write_on_a_full_disk(state, "removing.json")
