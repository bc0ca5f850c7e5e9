"""Polling with a deadline: tests wait for an outcome, never for a fixed time (no timing asserts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition", every: float = 0.2
) -> T:
    """The first truthy value of `predicate()`; AssertionError naming `what` when `timeout` seconds pass.
    The bound guards against hangs (under TCG, on a loaded host); it is not a speed claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
