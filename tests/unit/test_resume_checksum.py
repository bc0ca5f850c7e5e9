"""savestate.restore: the state is loaded paused while its CRC is computed alongside; the VM only runs when
the checksum holds. A damaged state never runs (stopped, `Damaged`), also when the damage makes the load
itself fail; a good one is resumed. The driver is a recorder (no VM: the vm tier's damaged-state test runs
the real thing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymachine.hostvm import savestate
from pymachine.hostvm.errors import PymachineError

from .test_savestate import CONFIG, saved  # noqa: F401 - the fixture, used by name


class Recorder:
    def __init__(self, load_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.load_fails = load_fails

    def restore(self, spec: object, path: Path, paused: bool = False) -> None:
        self.calls.append(f"restore paused={paused}")
        if self.load_fails:
            raise PymachineError("QEMU could not load the saved state")

    def force_stop(self, name: str) -> None:
        self.calls.append("force_stop")

    def unpause(self, name: str) -> None:
        self.calls.append("unpause")


def meta() -> dict:
    return savestate.check("m", CONFIG, "tcg")[0] or {}


def damage(f: savestate.Files) -> None:
    with open(f.state, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" * 16)


def test_a_good_state_runs_once_its_checksum_holds(saved: savestate.Files) -> None:  # noqa: F811
    drv = Recorder()
    savestate.restore("m", drv, None, meta(), None)
    assert drv.calls == ["restore paused=True", "unpause"]
    assert not saved.state.exists()  # used once


def test_a_damaged_state_is_stopped_before_it_runs(saved: savestate.Files) -> None:  # noqa: F811
    good = meta()
    damage(saved)
    drv = Recorder()
    with pytest.raises(savestate.Damaged, match="checksum mismatch"):
        savestate.restore("m", drv, None, good, None)
    assert drv.calls == ["restore paused=True", "force_stop"]
    assert not saved.state.exists()


def test_a_load_that_fails_on_a_damaged_state_says_damaged(saved: savestate.Files) -> None:  # noqa: F811
    good = meta()
    damage(saved)
    with pytest.raises(savestate.Damaged):
        savestate.restore("m", Recorder(load_fails=True), None, good, None)


def test_a_load_that_fails_on_a_good_state_says_why(saved: savestate.Files) -> None:  # noqa: F811
    with pytest.raises(PymachineError, match="could not load") as caught:
        savestate.restore("m", Recorder(load_fails=True), None, meta(), None)
    assert not isinstance(caught.value, savestate.Damaged)
