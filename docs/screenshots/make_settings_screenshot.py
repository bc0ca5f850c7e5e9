"""Take docs/screenshots/machine-settings.png: a running machine's Settings dialog with changes typed in,
under an X server with a window manager (the same setup as make_screenshots.py):

    Xvfb :57 -screen 0 1440x900x24 & DISPLAY=:57 openbox &
    DISPLAY=:57 PYMACHINE_HOME=/tmp/shots-home \
        python docs/screenshots/make_settings_screenshot.py docs/screenshots

Creates and boots a machine `dev` (SHOTS_MACHINE names it otherwise) if it does not run yet. Delete it
afterwards: `pymachine delete -f dev`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QDeadlineTimer, QThread
from PySide6.QtWidgets import QApplication

from pymachine.app.gui import workers
from pymachine.app.gui.main import make_app
from pymachine.app.gui.main_window import MainWindow
from pymachine.hostvm import machines

DEV = os.environ.get("SHOTS_MACHINE", "dev")


def settle(app: QApplication, ms: int = 1500) -> None:
    deadline = QDeadlineTimer(30000)
    while workers.busy() and not deadline.hasExpired():
        app.processEvents()
        QThread.msleep(20)
    pump = QDeadlineTimer(ms)
    while not pump.hasExpired():
        app.processEvents()
        QThread.msleep(20)


def main(out: str) -> int:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if not machines.exists(DEV):
        machines.create(DEV, cpus=1, memory="1G", driver="qemu")
    if machines.get(DEV).state != "running":
        machines.start(DEV, lambda v: print(f"  {v}"))
    app = make_app()
    window = MainWindow(tray=False)
    window.resize(1200, 760)
    window.move(40, 30)
    window.show()
    settle(app)
    deadline = QDeadlineTimer(60000)
    while not window.machines.select(DEV) and not deadline.hasExpired():
        settle(app, 200)
    window.machines.act("settings")
    dialog = window.machines.settings_dialog
    settle(app)
    dialog.cpus.setValue(2)
    dialog.memory.setValue(2.0)
    dialog.disk.setValue(dialog.disk.value() + 12)
    extra = Path("/var/tmp/shots-project")  # outside the shared temp folder: shares may not nest
    extra.mkdir(exist_ok=True)
    dialog.pick_folder = lambda: str(extra)  # type: ignore[method-assign]
    dialog.add_button.click()
    dialog.set_readonly(dialog.table.rowCount() - 1, True)
    dialog.adjustSize()
    dialog.move(window.x() + 220, window.y() + 90)
    settle(app)
    frame = dialog.frameGeometry()
    shot = app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    shot.save(str(folder / "machine-settings.png"))
    print(folder / "machine-settings.png")
    dialog.reject()
    window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
