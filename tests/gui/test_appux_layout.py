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


def test_at_the_smallest_size_no_label_is_cut_mid_word(qtbot, gui_home: Path) -> None:
    """At 640x480 a tab's title gave way to its buttons and was cut ("Containers on 'appux-de"): a label
    narrower than its minimum is cut. Titles now end in "…" there, the whole text in their tooltip."""
    from PySide6.QtWidgets import QLabel

    from pymachine.hostvm import config, paths, store

    name = "a-machine-with-a-long-name"
    paths.machine(name).dir.mkdir(parents=True)
    cfg = config.build(name, ncpus_host=2, fallback_driver="qemu", home_mount=False)
    store.write_json(paths.machine(name).config, cfg.to_json())
    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    window.resize(640, 480)
    with qtbot.waitExposed(window):
        window.show()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: window.machines.select(name), timeout=30000)
    cut: list[str] = []
    for tab in MainWindow.TABS:
        window.show_tab(tab)
        qtbot.waitUntil(lambda tab=tab: window.tabs.currentWidget() is getattr(window, tab), timeout=10000)
        for label in window.tabs.currentWidget().findChildren(QLabel):
            if label.isVisible() and label.width() < label.minimumSizeHint().width():
                cut.append(f"{tab}: {label.text()!r} {label.width()} < {label.minimumSizeHint().width()}")
    assert not cut, cut
    assert window.containers.title.toolTip() == f"Containers on '{name}'"
    window.shutdown()
