"""What a person sees first: the window opens inside the screen, and no input box cuts its own hint."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLineEdit
from support.gui import wait_idle

from pymachine.app.gui.main_window import MainWindow


def test_the_window_opens_inside_the_screen(qtbot, gui_home: Path) -> None:
    free = QGuiApplication.primaryScreen().availableGeometry()  # offscreen: an 800x800 screen
    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    assert window.width() <= free.width() and window.height() <= free.height(), (window.size(), free)
    assert window.width() >= window.minimumWidth() and window.height() >= window.minimumHeight()
    window.shutdown()


def test_no_input_box_cuts_its_hint(qtbot, gui_home: Path) -> None:
    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    window.resize(1280, 800)  # the size of docs/screenshots
    with qtbot.waitExposed(window):
        window.show()
    wait_idle(qtbot)
    cut: list[str] = []
    for name in MainWindow.TABS:
        window.show_tab(name)
        qtbot.waitUntil(lambda name=name: window.tabs.currentWidget() is getattr(window, name), timeout=10000)
        for box in window.tabs.currentWidget().findChildren(QLineEdit):
            hint = box.placeholderText()
            if not box.isVisible() or not hint:
                continue
            need = box.fontMetrics().horizontalAdvance(hint)
            margins = box.textMargins().left() + box.textMargins().right()
            # less the frame and QLineEdit's own margin, 4 px a side
            room = box.contentsRect().width() - margins - 8
            if need > room:
                cut.append(f"{name}: {hint!r} needs {need}px, has {room}px")
    assert not cut, cut
    window.shutdown()
