"""`mount add|rm` on a running machine: sshfs asks the host agent at once (a real control socket here, with
a handler standing in for the agent's SSH side) and records the share as started; others say when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pymachine.hostvm import paths, share_hotplug, store
from pymachine.hostvm.config import Share
from pymachine.hostvm.hostagent.control import ControlServer


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "h"))
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    return mp.dir


def _agent(folder: Path, answer: dict[str, Any], seen: list[dict[str, Any]]) -> ControlServer:
    def handler(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return answer

    server = ControlServer(folder / "ha.sock", handler)
    server.start()
    return server


def test_sshfs_is_mounted_now_and_recorded_as_started(machine: Path) -> None:
    store.write_json(
        machine / "state.json", {"share_transport": "sshfs", "shares": [{"path": "/a", "readonly": False}]}
    )
    seen: list[dict[str, Any]] = []
    server = _agent(machine, {"ok": True}, seen)
    try:
        added = share_hotplug.apply("dev", Share("/srv/x", True), True, running=True)
        assert added == share_hotplug.ShareChange("now")
        assert seen == [{"op": "share-mount", "share": "/srv/x", "readonly": True}]
        started = store.read_json(machine / "state.json", {})["shares"]
        assert started == [{"path": "/a", "readonly": False}, {"path": "/srv/x", "readonly": True}]
        assert share_hotplug.apply("dev", Share("/a"), False, running=True).when == "now"
        assert seen[-1]["op"] == "share-unmount"
        assert store.read_json(machine / "state.json", {})["shares"] == [{"path": "/srv/x", "readonly": True}]
    finally:
        server.stop()


def test_an_agent_that_refuses_or_is_gone_means_restart_with_the_reason(machine: Path) -> None:
    store.write_json(machine / "state.json", {"share_transport": "sshfs", "shares": []})
    gone = share_hotplug.apply("dev", Share("/srv/x"), True, running=True)
    assert gone.when == "restart" and "did not answer" in gone.problem
    server = _agent(machine, {"ok": False, "error": "no such folder"}, [])
    try:
        refused = share_hotplug.apply("dev", Share("/srv/x"), True, running=True)
    finally:
        server.stop()
    assert refused == share_hotplug.ShareChange("restart", "no such folder")
    assert store.read_json(machine / "state.json", {})["shares"] == []  # not recorded as started


def test_virtiofs_applies_at_restart_and_a_stopped_machine_at_its_start(machine: Path) -> None:
    store.write_json(machine / "state.json", {"share_transport": "virtiofs", "shares": []})
    assert share_hotplug.apply("dev", Share("/srv/x"), True, running=True).when == "restart"  # no agent
    seen: list[dict[str, Any]] = []
    server = _agent(machine, {"ok": True}, seen)
    try:
        assert share_hotplug.apply("dev", Share("/srv/x"), True, running=True).when == "restart"
        assert share_hotplug.apply("dev", Share("/srv/x"), True, running=False).when == "next start"
    finally:
        server.stop()
    assert seen == [{"op": "push-shares"}]  # the guest agent's list follows: "not mounted ... restart"
    assert store.read_json(machine / "state.json", {})["shares"] == []
