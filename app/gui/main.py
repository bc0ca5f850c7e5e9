"""`pymachine-gui` / `pymachine gui`: open the window, or render each main view to PNG (--screenshot DIR)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _engine_factory(engine: str | None) -> Any:
    """An explicit engine URL (unix://...) instead of each machine's forwarded socket: for demos and tests."""
    if not engine:
        from .containers_panel import default_client

        return default_client
    import docker

    from pymachine.hostvm.containers import API_VERSION

    return lambda _machine: docker.DockerClient(base_url=engine, version=API_VERSION, timeout=120)


def make_app(argv: Sequence[str] | None = None) -> Any:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("pymachine")
    app.setDesktopFileName("pymachine")
    from . import theme

    theme.follow_system(app)
    return app


def run(engine: str | None = None) -> int:
    app = make_app()
    from .main_window import MainWindow

    window = MainWindow(_engine_factory(engine), engine_override=bool(engine))
    before = app.quitOnLastWindowClosed()
    app.setQuitOnLastWindowClosed(window.tray is None)
    window.show()
    try:
        return int(app.exec())
    finally:
        window.shutdown()
        _drop_pending_quit(app)
        app.setQuitOnLastWindowClosed(before)


def _drop_pending_quit(app: Any) -> None:
    """Leave the application able to run event loops again after exec() returned.

    quit() (Ctrl+Q, the tray's Quit) closes every window, and the last one closing posts a second Quit event
    (Qt's quit-on-last-window) that outlives exec(). Delivered later, by anyone's processEvents(), it calls
    exit() with no loop running, and Qt then ends every later event loop at once (QEventLoop.exec() returns
    -1): a window opened afterwards in the same process never gets its events, nor becomes active.
    """
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)


def screenshot(
    folder: str | Path, engine: str | None = None, size: tuple[int, int] = (1280, 800)
) -> list[Path]:
    """Render each main view (machines, containers, images, settings, create dialog) to folder/<view>.png."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = make_app()
    from . import workers
    from .main_window import MainWindow

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(_engine_factory(engine), watch_events=False, tray=False, engine_override=bool(engine))
    window.resize(*size)
    window.show()

    def settle() -> None:
        # let the worker threads deliver (machines list, containers, images) before grabbing
        from PySide6.QtCore import QDeadlineTimer, QThread

        deadline = QDeadlineTimer(15000)
        while not deadline.hasExpired():
            app.processEvents()
            if not workers.busy():
                break
            QThread.msleep(20)
        app.processEvents()

    def pump(ms: int) -> None:
        # streams (a container's log) run on their own threads, outside workers.busy()
        from PySide6.QtCore import QDeadlineTimer, QThread

        deadline = QDeadlineTimer(ms)
        while not deadline.hasExpired():
            app.processEvents()
            QThread.msleep(20)

    settle()
    written = []
    for name in MainWindow.TABS:
        window.show_tab(name)
        settle()
        pump(700)
        settle()
        path = out / f"{name}.png"
        window.grab().save(str(path))
        written.append(path)
    window.show_tab("machines")
    dialog = window.machines.open_create()
    dialog.edits["name"].setText("Dev_1")  # show a field error, as a person would see it
    dialog.edits["memory"].setText("128M")
    settle()
    path = out / "create-dialog.png"
    dialog.grab().save(str(path))
    written.append(path)
    dialog.close()
    window.shutdown()
    window.close()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="pymachine-gui", description="pymachine's desktop app")
    p.add_argument("--screenshot", metavar="DIR", help="render each main view to DIR/<view>.png and exit")
    p.add_argument(
        "--engine", metavar="URL", help="talk to this engine (unix://...) instead of the machines'"
    )
    args = p.parse_args(argv)
    if args.screenshot:
        for path in screenshot(args.screenshot, args.engine):
            print(path)
        return 0
    return run(args.engine)


if __name__ == "__main__":
    sys.exit(main())
