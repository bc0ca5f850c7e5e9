"""A start that fails in the supervisor says what happened: a supervisor killed during the start is "died"
with its log's last words, one that does not report in time "did not report" (a starved guest, not a death:
the deploy tests once saw "the supervisor died" for what may have been the 60 s start timeout)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.runtime import spec

from pymachine_agent.runtime import launch
from pymachine_agent.runtime.errors import StartError


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def test_a_supervisor_killed_during_the_start_is_reported_dead(rt, layer: Path) -> None:  # type: ignore[no-untyped-def]
    rt.callbacks.on_netns = lambda cid, pid: os.kill(
        parent_of(pid), signal.SIGKILL
    )  # the init's parent: its supervisor
    s = spec(layer, ["true"], network="new")
    rt.create(s)
    with pytest.raises(StartError, match="the supervisor died \\(see .*supervisor.log\\)"):
        rt.start(s.id)


def test_a_supervisor_that_does_not_report_in_time_is_not_called_dead(rt, layer: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(launch, "START_TIMEOUT", 0.000001)
    rt.callbacks.on_netns = lambda cid, pid: None
    s = spec(layer, ["true"], network="new")
    rt.create(s)
    with pytest.raises(StartError, match="did not report within 0 s") as info:
        rt.start(s.id)
    assert "died" not in str(info.value)
