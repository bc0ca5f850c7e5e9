"""workers.run_task: an answer for a widget deleted while its task ran (a panel or dialog closed meanwhile)
is dropped, not delivered into the dead widget. In the full gui tier a machines panel's refresh answered after
its test had closed it, and 'Internal C++ object (RowModel) already deleted' failed the next test."""

from __future__ import annotations

import threading

import shiboken6
from PySide6.QtWidgets import QWidget
from support.gui import wait_idle

from pymachine.app.gui import workers


class _Panel(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.answers: list[object] = []

    def fill(self, result: object) -> None:
        self.answers.append(result)
        self.setWindowTitle(str(result))  # touches the C++ object: raises if it was deleted

    def failed(self, exc: BaseException) -> None:
        self.answers.append(exc)
        self.setWindowTitle(str(exc))


def test_an_answer_for_a_deleted_widget_is_dropped(qtbot) -> None:
    release = threading.Event()
    panel = _Panel()
    answers = panel.answers
    workers.run_task(lambda: release.wait(30) and "late", on_done=panel.fill)
    workers.run_task(
        lambda: release.wait(30) and (_ for _ in ()).throw(OSError("late failure")), on_failed=panel.failed
    )
    panel.deleteLater()
    qtbot.waitUntil(lambda: not shiboken6.isValid(panel), timeout=10000)
    release.set()
    wait_idle(qtbot)  # an exception in the Qt event loop here fails the test (pytest-qt)
    assert answers == []


def test_an_answer_for_a_live_widget_is_delivered(qtbot) -> None:
    panel = _Panel()
    qtbot.addWidget(panel)
    workers.run_task(lambda: "now", on_done=panel.fill)
    wait_idle(qtbot)
    assert panel.answers == ["now"] and panel.windowTitle() == "now"
