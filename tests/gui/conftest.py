"""GUI tier: real widgets on Qt's offscreen platform (no display needed)."""

from __future__ import annotations

import gc
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


@pytest.fixture(scope="session", autouse=True)
def _no_qt_object_outlives_the_session(qapp: Any) -> Iterator[None]:
    """Close and delete every window the tests left before the interpreter exits. Left to Python's
    finalization, the QApplication and the widgets are destroyed in no fixed order, and Qt then aborts the
    process after all tests passed ("shared QObject was deleted directly", exit status 139), which
    turns a green run red."""
    yield
    from PySide6.QtCore import QCoreApplication, QEvent

    for widget in qapp.topLevelWidgets():
        widget.close()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QCoreApplication.processEvents()
    gc.collect()
