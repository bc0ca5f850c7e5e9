"""The tray icon: each machine's state with quick start/stop, and a way back to the window. Only created when
`QSystemTrayIcon.isSystemTrayAvailable()` (offscreen and many bare X servers have no tray)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget


def build_menu(
    menu: QMenu,
    rows: list[Any],
    run_verb: Callable[[str, str], None],
    show_window: Callable[[], None],
    quit_app: Callable[[], None],
) -> None:
    """Fill `menu`: one submenu per machine ("dev — running" → Stop / Start), then Open and Quit."""
    menu.clear()
    if not rows:
        menu.addAction("No machines yet").setEnabled(False)
    for m in rows:
        sub = menu.addMenu(f"{m.name} — {m.state}")
        start = QAction("Start", sub)
        start.setEnabled(m.state in ("stopped", "saved"))
        start.triggered.connect(lambda _c=False, n=m.name: run_verb("start", n))
        stop = QAction("Stop", sub)
        stop.setEnabled(m.state.startswith("running"))
        stop.triggered.connect(lambda _c=False, n=m.name: run_verb("stop", n))
        sub.addAction(start)
        sub.addAction(stop)
    menu.addSeparator()
    menu.addAction("Open pymachine", show_window)
    menu.addAction("Quit", quit_app)


class Tray(QSystemTrayIcon):
    def __init__(
        self,
        icon: QIcon,
        run_verb: Callable[[str, str], None],
        show_window: Callable[[], None],
        quit_app: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(icon, parent)
        self.menu = QMenu()
        self._args = (run_verb, show_window, quit_app)
        self.setContextMenu(self.menu)
        self.activated.connect(
            lambda reason: show_window() if reason == QSystemTrayIcon.ActivationReason.Trigger else None
        )
        self.update_machines([])

    def update_machines(self, rows: list[Any]) -> None:
        running = [m.name for m in rows if m.state.startswith("running")]
        self.setToolTip(
            f"pymachine — running: {', '.join(running)}" if running else "pymachine — no machine running"
        )
        build_menu(self.menu, rows, *self._args)
