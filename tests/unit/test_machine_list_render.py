"""`pymachine list`/`inspect` rendering of the host agent's status: pure functions, no VM."""

from __future__ import annotations

from typing import Any

import pytest

from pymachine.app.cli.machine_cmd import engine_summary, list_json, list_rows, render_table
from pymachine.hostvm.machines import Machine


def _machine(name: str = "dev", state: str = "running") -> Machine:
    return Machine(
        name=name,
        state=state,
        cpus=2,
        memory=1 << 30,
        disk=8 << 30,
        ssh_port=40022 if state == "running" else None,
        accelerator="tcg",
        driver="qemu",
        uri="qemu (direct)",
        pid=123 if state == "running" else None,
        dir="/x",
        console_log="/x/console.log",
        image="abc",
    )


def _status(state: str = "ready", link: str = "up", forwards: list[dict[str, Any]] | None = None) -> dict:
    return {
        "running": True,
        "pid": 9,
        "state": state,
        "link": {"state": link, "last_error": None if link == "up" else "Connection refused"},
        "engine_socket": {"health": "ok" if state == "ready" else "waiting-for-guest-agent"},
        "forwards": forwards or [],
    }


FWD_OK = {"proto": "tcp", "host_ip": "127.0.0.1", "host_port": 8080, "guest_port": 80, "health": "ok"}
FWD_BAD = {**FWD_OK, "host_port": 8081, "health": "failing"}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "-"),
        (_status(), "ready"),
        (_status(forwards=[FWD_OK]), "ready"),
        (_status(forwards=[FWD_OK, FWD_BAD]), "degraded: 8081/tcp failing"),
        (_status("degraded", "down"), "degraded: link down (Connection refused)"),
        (_status("degraded", "up"), "degraded: engine waiting-for-guest-agent"),
        (
            {"running": True, "pid": 9, "state": "unresponsive", "forwards": []},
            "degraded: host agent does not answer",
        ),
        (
            {"running": True, "pid": 9, "state": "restarting", "repaired": True},
            "degraded: host agent restarted",
        ),
        ({"running": False, "pid": None, "state": "stopped", "forwards": []}, "down"),
        (
            {"running": False, "state": "stopped", "error": "could not restart the host agent: boom"},
            "down: could not restart the host agent: boom",
        ),
    ],
)
def test_engine_summary(status: dict | None, expected: str) -> None:
    assert engine_summary(status) == expected


def test_list_table_has_engine_column() -> None:
    out = render_table(
        list_rows([(_machine("dev"), _status(forwards=[FWD_BAD])), (_machine("old", "stopped"), None)])
    ).splitlines()
    assert out[0].split() == [
        "NAME",
        "STATE",
        "CPUS",
        "MEMORY",
        "DISK",
        "SSH",
        "PORT",
        "ACCEL",
        "DRIVER",
        "PORTS",
        "ENGINE",
    ]
    assert out[1].startswith("dev ") and out[1].endswith("degraded: 8081/tcp failing")
    assert out[2].startswith("old ") and out[2].endswith("-")
    assert "8081/tcp ssh" in out[1]  # an agent's forward without "path" was SSH's
    # columns line up: ENGINE starts at the same offset in every row
    col = out[0].index("ENGINE")
    assert out[1][col:] == "degraded: 8081/tcp failing"


def test_list_json_carries_link_and_forwards() -> None:
    running = list_json(_machine(), _status(forwards=[FWD_OK]))
    assert running["link"] == "up" and running["forwards"] == [FWD_OK] and running["engine"] == "ready"
    assert running["name"] == "dev" and running["state"] == "running"
    stopped = list_json(_machine("old", "stopped"), None)
    assert stopped["link"] is None and stopped["forwards"] == [] and stopped["engine"] == "-"
    assert list_json(_machine(), {"running": True, "state": "unresponsive"})["link"] == "down"


def test_list_skips_status_for_stopped_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymachine.app.cli import machine_cmd
    from pymachine.hostvm.hostagent import launcher

    asked: list[str] = []
    monkeypatch.setattr(launcher, "status", lambda name, repair=True: asked.append(name) or _status())
    assert machine_cmd._host_agent_status(_machine("old", "stopped")) is None
    assert machine_cmd._host_agent_status(_machine("dev")) == _status()
    assert asked == ["dev"]
