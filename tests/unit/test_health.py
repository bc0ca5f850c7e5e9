"""Health check state machine (guest-agent/pymachine_agent/health.py): dockerd's rules as pure logic."""

from __future__ import annotations

import pytest

from pymachine_agent import health
from pymachine_agent.health import SECOND, Health, ProbeResult, apply_result

CHECK = {"Test": ["CMD", "true"], "Retries": 2, "StartPeriod": 10 * SECOND}


def _result(t: float, code: int) -> ProbeResult:
    return ProbeResult(t, t + 0.1, code, f"exit {code}")


def test_failures_in_the_start_period_do_not_count() -> None:
    h = Health()
    assert not apply_result(h, _result(5, 1), CHECK, started_at=0)
    assert (h.status, h.failing_streak) == ("starting", 0)
    assert apply_result(h, _result(6, 0), CHECK, started_at=0)
    assert h.status == "healthy"


def test_retries_failures_in_a_row_make_it_unhealthy_and_a_success_heals() -> None:
    h = Health()
    assert not apply_result(h, _result(11, 1), CHECK, started_at=0)
    assert (h.status, h.failing_streak) == ("starting", 1)
    assert apply_result(h, _result(12, 3), CHECK, started_at=0)  # any non-zero code is a failure
    assert (h.status, h.failing_streak) == ("unhealthy", 2)
    assert apply_result(h, _result(13, 0), CHECK, started_at=0)
    assert (h.status, h.failing_streak) == ("healthy", 0)


def test_after_a_success_the_start_period_no_longer_protects() -> None:
    h = Health()
    apply_result(h, _result(1, 0), CHECK, started_at=0)
    apply_result(h, _result(2, 1), CHECK, started_at=0)
    assert h.failing_streak == 1


def test_log_keeps_the_last_five() -> None:
    h = Health()
    for i in range(8):
        apply_result(h, _result(20 + i, 1), CHECK, started_at=0)
    doc = h.to_docker()
    assert len(doc["Log"]) == 5 and doc["Log"][-1]["Output"] == "exit 1" and doc["Log"][0]["ExitCode"] == 1


def test_merge_takes_unset_fields_from_the_image() -> None:
    image = {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5 * SECOND, "Retries": 4}
    assert health.merge(None, image) == image
    merged = health.merge({"Interval": 2 * SECOND}, image)
    assert merged == {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2 * SECOND, "Retries": 4}
    assert health.merge({"Test": ["NONE"]}, image)["Test"] == ["NONE"]


def test_probe_argv() -> None:
    assert health.probe_argv({"Test": ["CMD", "a", "b"]}, None) == ["a", "b"]
    assert health.probe_argv({"Test": ["CMD-SHELL", "a b"]}, None) == ["/bin/sh", "-c", "a b"]
    assert health.probe_argv({"Test": ["CMD-SHELL", "x"]}, ["/bin/bash", "-ec"]) == ["/bin/bash", "-ec", "x"]
    assert health.probe_argv({"Test": ["NONE"]}, None) is None
    assert health.probe_argv({}, None) is None


@pytest.mark.parametrize(
    "check,message",
    [
        ({"Test": ["CMD", "x"], "Interval": 1000}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Test": ["CMD", "x"], "Timeout": -1}, "Timeout in Healthcheck cannot be less than 1ms"),
        ({"Test": ["CMD", "x"], "Retries": -1}, "Retries in Healthcheck cannot be negative"),
        ({"Test": ["SHELL", "x"]}, "unknown Healthcheck type"),
        ({"Test": ["CMD"]}, "needs a command"),
    ],
)
def test_validate_refuses_what_dockerd_refuses(check: dict, message: str) -> None:
    with pytest.raises(health.HealthcheckInvalid, match=message):
        health.validate(check)
