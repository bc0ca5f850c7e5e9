"""GUI tier: real widgets on Qt's offscreen platform (no display needed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_QPA_FONTDIR", "/usr/share/fonts/truetype/dejavu")

from support.gui import agent_engine, gui_home, wait_idle  # noqa: E402,F401 - fixtures and helpers


@pytest.fixture(autouse=True)
def _event_loops_still_run(qapp: Any) -> Iterator[None]:
    """Every GUI test has the QApplication (a widget made without one aborts the process, so a test that made
    a QMenu without asking for qapp passed only after another test); and after each, an event loop still runs.

    A Quit event left in the queue (app.exec() ended by quit() while the last window's close posted another)
    is delivered by pytest-qt's processEvents between tests; Qt then ends every later QEventLoop at once, so
    qtbot.wait/waitUntil stop processing events and some later test times out far from the cause. This check
    fails the test that left it instead.
    """
    yield
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(0, lambda: loop.exit(7))
    assert loop.exec() == 7, "this test left the Qt application quitting: no event loop runs after it"
