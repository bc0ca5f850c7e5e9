"""The kernel gate (issue 14, cold boot): in a machine the guest init loads the engine's kernel modules only
once the agent answers, and says so in `$PYMACHINE_MODULES` (pymachine_agent/kernelgate.py). Here the test
plays the init: a real agent answers `/_ping`, `version` and an image load before that file exists, holds a
`docker run` until it does, and answers with the reason when the modules failed, `/_ping` still answering.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from support.agent import Agent, start_agent

HELD_S = 3.0  # a `docker run --rm busybox true` takes well under this here: long enough to see it held


def loaded(status_file: Path, status: int) -> None:
    """What the guest init writes once its `modprobe -a` ended (atomically)."""
    tmp = status_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "log": "/run/modprobe.log"}))
    tmp.rename(status_file)


def gated_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Agent, Path]:
    status_file = tmp_path / "modules.json"
    monkeypatch.setenv("PYMACHINE_MODULES", str(status_file))
    agent = start_agent(tmp_path / "a")  # returns once /_ping answers: before the modules are "in"
    return agent, status_file


def test_a_run_issued_before_the_modules_waits_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, status_file = gated_agent(tmp_path, monkeypatch)
    try:
        assert agent.request("GET", "/version")[0] == 200
        agent.load_busybox()  # the image store needs no kernel module: a first run's load does not wait
        run: dict[str, subprocess.CompletedProcess[str]] = {}
        thread = threading.Thread(
            target=lambda: run.update(
                done=agent.docker("run", "--rm", agent.busybox, "echo", "ran", check=False)
            )
        )
        thread.start()
        thread.join(HELD_S)
        assert thread.is_alive(), f"the run did not wait for the kernel modules: {run}"
        assert agent.request("GET", "/_ping")[0] == 200
        loaded(status_file, 0)
        thread.join(120)
        assert not thread.is_alive()
        assert run["done"].returncode == 0, run["done"].stderr
        assert run["done"].stdout.strip() == "ran"
        assert "engine started (modules" in agent.log_path.read_text()
    finally:
        if not status_file.exists():
            loaded(status_file, 0)
        agent.stop()


def test_failed_modules_give_a_clear_error_while_ping_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, status_file = gated_agent(tmp_path, monkeypatch)
    try:
        agent.load_busybox()
        loaded(status_file, 1)
        status, _, body = agent.request("POST", "/containers/create", {"Image": agent.busybox})
        assert status == 503, body
        message = json.loads(body)["message"]
        assert "kernel modules failed to load" in message and "/run/modprobe.log" in message, message
        result = agent.docker("run", "--rm", agent.busybox, "true", check=False)
        assert result.returncode != 0 and "kernel modules failed to load" in result.stderr, result
        assert agent.request("GET", "/_ping")[0] == 200
        assert agent.request("GET", "/version")[0] == 200
    finally:
        agent.stop()
