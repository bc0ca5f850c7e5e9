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
def _every_gui_test_has_the_qapplication(qapp: Any) -> Iterator[None]:
    """A widget made without a QApplication aborts the process: the tray-menu test, which made a QMenu
    without asking for qapp, passed only when another test ran first (pytest-randomly found it)."""
    yield
