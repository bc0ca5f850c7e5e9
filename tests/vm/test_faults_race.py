"""Issue 16: two CLIs racing on one machine. Two `start`s at once and a `list` loop beside them leave one QEMU
and one host agent and an engine that answers; a `delete -f` racing a `start` and the `list` loop leaves no
process of the machine behind, and the name can be created again. Every command either works or fails with a
message, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.hostagent_vm import SHARED_CACHE

NAME = "race"


def _processes_of(folder: Path) -> list[str]:
    """Command lines of live processes that name the machine's folder (QEMU, host agent, supervisor)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if str(folder) in cmd and not zombie:
            found.append(f"{pid}: {cmd[:160]}")
    return found


def test_racing_starts_then_a_delete_racing_start_and_list(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    # The docker CLI's contexts (`pymachine-race`) in a folder of this test's: the user's ~/.docker is shared
    # with every other session of this user, which may run this test at the same time.
    env.update(
        PYMACHINE_HOME=str(tmp_path / "home"),
        PYMACHINE_CACHE=str(SHARED_CACHE),
        DOCKER_CONFIG=str(tmp_path / "docker-config"),
    )
    folder = tmp_path / "home" / "m" / NAME

    def cli(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pymachine.app.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(p: subprocess.Popen[str], timeout: float = 900) -> tuple[int, str]:
        out, err = p.communicate(timeout=timeout)
        assert "Traceback" not in err, err
        return p.returncode, out + err

    lists: list[tuple[int, str]] = []
    stop_listing = threading.Event()

    def list_loop() -> None:
        while not stop_listing.is_set():
            lists.append(finish(cli("list"), 120))

    code, out = finish(cli("create", NAME, "--driver", "qemu", "--no-home-mount", "--memory", "768M"))
    assert code == 0, out
    lister = threading.Thread(target=list_loop, daemon=True)
    lister.start()
    try:
        first, second = cli("start", NAME), cli("start", NAME)
        results = [finish(first), finish(second)]
        assert [c for c, _ in results] == [0, 0], results
        qemus = [p for p in _processes_of(folder) if "qemu-system" in p]
        assert len(qemus) == 1, qemus
        version = subprocess.run(
            ["docker", "--context", f"pymachine-{NAME}", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert version.returncode == 0 and version.stdout.strip(), version.stderr

        deleting, starting = cli("delete", "-f", NAME), cli("start", NAME)
        code, out = finish(deleting)
        assert code == 0, out
        start_code, start_out = finish(starting)
        # the start ran before the delete (and found it running) or after it (no such machine): both say so
        assert start_code == 0 or "does not exist" in start_out or "no machine" in start_out.lower(), (
            start_out
        )
    finally:
        stop_listing.set()
        lister.join(180)
        if folder.exists():
            finish(cli("delete", "-f", NAME))
    assert all(c == 0 for c, _ in lists), [o for c, o in lists if c != 0][:3]
    assert len(lists) >= 2
    if start_code == 0 and folder.exists():  # the start won the race after all: delete it again
        code, out = finish(cli("delete", "-f", NAME))
        assert code == 0, out
    leftovers = _processes_of(folder)
    assert not leftovers, leftovers
    code, out = finish(cli("create", NAME, "--driver", "qemu", "--no-home-mount"))
    assert code == 0, out
    code, out = finish(cli("delete", "-f", NAME))
    assert code == 0, out


@pytest.fixture(autouse=True)
def _no_docker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
