"""Run a pure function under a deadline that holds even when the function is stuck inside one C call.

A thread cannot be used for that: a regex that backtracks holds the GIL, so the waiting thread never gets to
notice its timeout. A forked child can be killed instead; it hands back a small, picklable answer.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _child(fn: Callable[[], Any], conn: Any) -> None:
    try:
        conn.send(("ok", fn()))
    except BaseException as exc:  # noqa: BLE001 - handed back to the test as (type name, message)
        conn.send(("raised", type(exc).__name__, str(exc)[:2000]))


def run_within(seconds: float, fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok", fn's value) or ("raised", exception type name, message); fails the test past the deadline."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds):
            raise AssertionError(f"did not finish within {seconds} s (exponential or quadratic time?)")
        return parent.recv()
    finally:
        proc.kill()
        proc.join()
        parent.close()
