"""`machines.delete` removes the machine folder and its docker context (no VM: a stopped qemu machine)."""

from __future__ import annotations

import pytest

from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines, paths, store
from pymachine.hostvm.errors import NotFoundError
from pymachine.hostvm.hostagent import launcher


def _stopped_machine(name: str) -> None:
    mp = paths.machine(name)
    mp.dir.mkdir(parents=True)
    cfg = cfgmod.MachineConfig(
        name=name, cpus=1, memory=cfgmod.DEFAULT_MEMORY, disk=cfgmod.DEFAULT_DISK, driver="qemu"
    )
    store.write_json(mp.config, cfg.to_json())


def test_delete_removes_the_docker_context(pymachine_home, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    removed: list[str] = []
    monkeypatch.setattr(launcher, "remove_docker_context", removed.append)
    _stopped_machine("dev")
    machines.delete("dev")
    assert removed == ["dev"]
    assert not paths.machine("dev").dir.exists()
    with pytest.raises(NotFoundError):
        machines.get("dev")


def test_delete_survives_a_failing_context_removal(pymachine_home, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def boom(name: str) -> None:
        raise OSError("docker CLI crashed")

    monkeypatch.setattr(launcher, "remove_docker_context", boom)
    _stopped_machine("dev")
    machines.delete("dev")
    assert not paths.machine("dev").dir.exists()
