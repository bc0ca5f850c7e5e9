"""Take docs/screenshots/*.png of the real app on a real machine, under an X server with a window manager.

    Xvfb :57 -screen 0 1440x900x24 & DISPLAY=:57 openbox &
    DISPLAY=:57 PYMACHINE_HOME=/tmp/shots-home python docs/screenshots/make_screenshots.py docs/screenshots

Creates and boots a machine `dev` (a few minutes under TCG) and a stopped one `ci` in that home (SHOTS_MACHINE
and SHOTS_STOPPED name them otherwise), runs containers in `dev` (a web server with a published port, a CPU
spinner, one with a volume, one that exited), then grabs the screen (window decorations included) for each
view. Delete the machines afterwards: `pymachine delete -f dev ci`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QDeadlineTimer, Qt, QThread
from PySide6.QtWidgets import QApplication

from pymachine.app.gui import theme, workers
from pymachine.app.gui.main import make_app
from pymachine.app.gui.main_window import MainWindow
from pymachine.hostvm import containers, images_io, machines

DEV = os.environ.get("SHOTS_MACHINE", "dev")  # the running machine
CI = os.environ.get("SHOTS_STOPPED", "ci")  # a stopped one
PORT = int(os.environ.get("SHOTS_PORT", "8080"))  # web's published port (another on a shared host)


def pump(app: QApplication, ms: int) -> None:
    deadline = QDeadlineTimer(ms)
    while not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(20)


def settle(app: QApplication, ms: int = 1500) -> None:
    deadline = QDeadlineTimer(30000)
    while workers.busy() and not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(20)
    pump(app, ms)


def until(app: QApplication, check, ms: int = 60000) -> None:  # type: ignore[no-untyped-def]
    deadline = QDeadlineTimer(ms)
    while not check() and not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(50)


def shot(app: QApplication, window: MainWindow, path: Path) -> None:
    settle(app, 800)
    frame = window.frameGeometry()
    screen = app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    screen.save(str(path))
    print(path)


def prepare() -> None:
    for name, start in ((DEV, True), (CI, False)):
        if not machines.exists(name):
            machines.create(name, cpus=2 if start else 1, memory="1G", driver="qemu")
    if machines.get(DEV).state != "running":
        machines.start(DEV, lambda v: print(f"  {v}"))
    dc = containers.client(DEV)
    images_io.ensure_image(dc, "pymachine/busybox")
    have = {c.name for c in dc.containers.list(all=True)}
    if "web" not in have:
        dc.containers.run(
            "pymachine/busybox",
            ["httpd", "-f", "-v", "-p", "80"],
            name="web",
            ports={"80/tcp": PORT},
            detach=True,
        )
    if "spinner" not in have:
        dc.containers.run(
            "pymachine/busybox", ["sh", "-c", "while :; do :; done"], name="spinner", detach=True
        )
    if "cache" not in have:
        dc.volumes.create("cache-data")
        dc.containers.run(
            "pymachine/busybox",
            ["sleep", "100000"],
            name="cache",
            volumes={"cache-data": {"bind": "/data"}},
            detach=True,
        )
    if "old-build" not in {v.name for v in dc.volumes.list()}:
        dc.volumes.create("old-build")
    if "migrate" not in have:
        c = dc.containers.run(
            "pymachine/busybox", ["sh", "-c", "echo migrated; exit 0"], name="migrate", detach=True
        )
        c.wait(timeout=60)


def main(out: str) -> int:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    prepare()
    app = make_app()
    window = MainWindow(tray=False)
    window.resize(1200, 760)
    window.move(40, 30)
    window.show()
    settle(app)
    until(app, lambda: window.machines.select(DEV))
    for _ in range(2):  # two refreshes: the footer's VM CPU needs two samples
        window.machines.refresh()
        settle(app, 600)
        time.sleep(1.5)
    window.machines.refresh()
    settle(app)
    shot(app, window, folder / "machines.png")

    window.show_tab("containers")
    panel = window.containers
    until(app, lambda: panel.select("spinner"))
    for _ in range(2):  # CPU % needs two samples
        panel.refresh()
        settle(app, 500)
        time.sleep(1.5)
    panel.refresh()
    settle(app)
    panel.select("spinner")
    panel.tabs.setCurrentWidget(panel.stats)
    until(app, lambda: len(panel.stats.history.points["cpu"]) >= 12, 90000)
    shot(app, window, folder / "containers.png")

    panel.select("web")
    panel.tabs.setCurrentWidget(panel.terminal)
    settle(app)
    panel.terminal.open_button.click()
    until(app, panel.terminal.input.isEnabled)
    pump(app, 1500)
    panel.terminal.send_bytes(b"top\r")
    pump(app, 4000)
    shot(app, window, folder / "terminal.png")
    panel.terminal.send_bytes(b"q")
    panel.terminal.stop()

    window.show_tab("images")
    settle(app)
    shot(app, window, folder / "images.png")
    window.show_tab("volumes")
    until(app, lambda: window.volumes.select("cache-data"))
    settle(app)
    shot(app, window, folder / "volumes.png")
    window.show_tab("settings")
    settle(app)
    shot(app, window, folder / "settings.png")

    window.show_tab("machines")
    dialog = window.machines.open_create()
    dialog.edits["name"].setText("Dev_1")  # field errors, as a person would see them
    dialog.edits["memory"].setText("128M")
    dialog.move(window.x() + 200, window.y() + 120)
    settle(app)
    frame = dialog.frameGeometry()
    app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(
        str(folder / "create-dialog.png")
    )
    dialog.close()

    os.environ["PYMACHINE_THEME"] = "dark"
    theme.apply(app)
    window.show_tab("containers")
    panel.select("web")
    panel.tabs.setCurrentWidget(panel.logs)
    settle(app)
    shot(app, window, folder / "dark.png")

    window.resize(640, 480)
    os.environ["PYMACHINE_THEME"] = "light"
    theme.apply(app)
    until(app, lambda: window.width() == 640)
    shot(app, window, folder / "small-640x480.png")
    window.setWindowState(Qt.WindowState.WindowNoState)
    window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
