from pathlib import Path

import pytest

from pymachine.hostvm import paths
from pymachine.hostvm.errors import PymachineError


def test_home_follows_env(pymachine_home: Path) -> None:
    assert paths.home() == pymachine_home
    assert paths.machine("default").docker_socket.parent == pymachine_home / "m" / "default"


def test_unwritable_home_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PYMACHINE_HOME", str(blocker / "sub"))
    with pytest.raises(PymachineError) as info:
        paths.ensure_home()
    assert "PYMACHINE_HOME" in info.value.hint


def test_long_socket_path_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", "/tmp/" + "x" * 120)
    with pytest.raises(PymachineError, match="too long"):
        paths.check_socket_path(paths.machine("default").docker_socket)
