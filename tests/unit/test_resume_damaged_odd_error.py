"""savestate.restore: a damaged state whose load fails with an error that is not the driver's own
(libvirt-python once raised "SystemError: <built-in function virDomainRestoreFlags> returned a result with
an exception set" in test_a_damaged_state_boots_cold) is still reported as damaged, from its checksum."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymachine.hostvm import savestate

from .test_resume_checksum import damage, meta
from .test_savestate import saved  # noqa: F401 - the fixture, used by name


class OddFailure:
    def restore(self, spec: object, path: Path, paused: bool = False) -> None:
        raise SystemError("<built-in function virDomainRestoreFlags> returned a result with an exception set")


def test_an_odd_load_error_on_a_damaged_state_says_damaged(saved: savestate.Files) -> None:  # noqa: F811
    good = meta()
    damage(saved)
    with pytest.raises(savestate.Damaged):
        savestate.restore("m", OddFailure(), None, good, None)


def test_an_odd_load_error_on_a_good_state_is_itself(saved: savestate.Files) -> None:  # noqa: F811
    with pytest.raises(SystemError):
        savestate.restore("m", OddFailure(), None, meta(), None)
