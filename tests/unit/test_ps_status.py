"""`pymachine ps` STATUS text like Docker's (`Up 5 seconds`, `Exited (0) 2 minutes ago`), from State times."""

from __future__ import annotations

import datetime as dt

import pytest

from pymachine.hostvm.containers import human_duration, parse_time, status_text

NOW = dt.datetime(2026, 11, 29, 14, 0, 0, tzinfo=dt.UTC)
ZERO = "0001-01-01T00:00:00Z"


def _ago(**kw: float) -> str:
    # the guest agent writes RFC 3339 with nanoseconds, as Docker does
    return (NOW - dt.timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (5, "5 seconds"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * 60, "59 minutes"),
        (3600, "About an hour"),
        (5400, "2 hours"),  # rounds to the nearest hour, like go-units
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (
            {"Status": "running", "Running": True, "StartedAt": _ago(seconds=5), "FinishedAt": ZERO},
            "Up 5 seconds",
        ),
        ({"Status": "running", "StartedAt": _ago(hours=3)}, "Up 3 hours"),
        (
            {"Status": "paused", "Running": True, "Paused": True, "StartedAt": _ago(minutes=10)},
            "Up 10 minutes (Paused)",
        ),
        (
            {"Status": "running", "StartedAt": _ago(seconds=30), "Health": {"Status": "healthy"}},
            "Up 30 seconds (healthy)",
        ),
        (
            {"Status": "exited", "ExitCode": 0, "StartedAt": _ago(minutes=5), "FinishedAt": _ago(minutes=2)},
            "Exited (0) 2 minutes ago",
        ),
        (
            {"Status": "exited", "ExitCode": 137, "StartedAt": _ago(days=4), "FinishedAt": _ago(days=3)},
            "Exited (137) 3 days ago",
        ),
        ({"Status": "created", "StartedAt": ZERO, "FinishedAt": ZERO}, "Created"),
        (
            {"Status": "restarting", "ExitCode": 1, "FinishedAt": _ago(seconds=3)},
            "Restarting (1) 3 seconds ago",
        ),
        ({"Status": "dead"}, "Dead"),
        ({"Status": "removing"}, "Removal In Progress"),
        ({"Status": "running"}, "Up"),  # no StartedAt from an old engine: no made-up duration
    ],
)
def test_status_text(state: dict, text: str) -> None:
    assert status_text(state, NOW) == text


def test_parse_time() -> None:
    assert parse_time(ZERO) is None and parse_time("") is None and parse_time(None) is None
    assert parse_time("garbage") is None
    assert parse_time("2026-11-29T13:59:55.123456789Z") == dt.datetime(
        2026, 11, 29, 13, 59, 55, 123456, dt.UTC
    )
    assert parse_time("2026-11-29T15:00:00+01:00") == NOW
    assert parse_time("2026-11-29T14:00:00") == NOW  # no zone: UTC, as the engine means


def test_ps_rows_use_docker_status() -> None:
    from pymachine.app.cli.container_cmd import ps_rows

    class Row:  # the fields of docker-py's Container that summary() reads
        def __init__(self, cid: str, state: dict) -> None:
            self.id, self.name, self.status, self.image = cid * 64, "c" + cid, state["Status"], None
            self.attrs = {"Config": {"Image": "pymachine/busybox", "Cmd": ["sleep", "9"]}, "State": state}

    up = {"Status": "running", "Running": True, "StartedAt": _ago(seconds=5), "FinishedAt": ZERO}
    done = {"Status": "exited", "ExitCode": 0, "StartedAt": _ago(minutes=3), "FinishedAt": _ago(minutes=2)}
    rows = ps_rows([Row("a", up), Row("b", done)], [], NOW)
    assert [(r["Names"], r["State"], r["Status"]) for r in rows] == [
        ("ca", "running", "Up 5 seconds"),
        ("cb", "exited", "Exited (0) 2 minutes ago"),
    ]
