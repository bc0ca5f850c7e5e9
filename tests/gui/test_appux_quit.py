"""`pymachine gui` quit by the user leaves the process's Qt application usable: later windows get events.

Qt's quit() closes every window and the last close posts a second Quit that outlived app.exec(); delivered
later it ended every event loop of the process at once, so a window opened after it never became active (the
order-dependent failure of test_window's shortcut test after the gui.main test).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QApplication

from pymachine.app.gui.main import main as gui_main
from pymachine.app.gui.main_window import MainWindow


def _quit_like_the_user(app: QApplication, seen: list[str]) -> None:
    """What Ctrl+Q and the tray's Quit do: MainWindow.quit() on the shown window."""
    windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    seen.extend(w.windowTitle() for w in windows)
    for w in windows:
        w.quit()


def test_after_gui_quits_event_loops_run_and_a_new_window_activates(qtbot, gui_home: Path) -> None:
    app = QApplication.instance()
    app.setQuitOnLastWindowClosed(True)
    for _ in range(2):  # twice: the first run left nothing that breaks the second
        seen: list[str] = []
        QTimer.singleShot(300, lambda seen=seen: _quit_like_the_user(app, seen))
        assert gui_main([]) == 0
        assert seen == ["pymachine"]
        app.processEvents()  # where a left-over Quit would be delivered
        loop = QEventLoop()
        QTimer.singleShot(0, lambda loop=loop: loop.exit(7))
        assert loop.exec() == 7, "an event loop after the app quit ended at once"
    assert app.quitOnLastWindowClosed() is True  # run() put back what it changed

    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    with qtbot.waitExposed(window, timeout=30000):
        window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=30000)
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.tabs.currentIndex() == 2, timeout=10000)
    window.shutdown()
