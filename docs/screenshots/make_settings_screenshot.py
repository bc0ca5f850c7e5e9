"""Take docs/screenshots/machine-settings.png: a running machine's Settings dialog with changes typed in,
under an X server with a window manager (the same setup as make_screenshots.py, whose helpers it uses):

    Xvfb :57 -screen 0 1440x900x24 & DISPLAY=:57 openbox &
    DISPLAY=:57 PYMACHINE_HOME=/tmp/shots-home \
        python docs/screenshots/make_settings_screenshot.py docs/screenshots

Creates and boots a machine `dev` (SHOTS_MACHINE names it otherwise) if it does not run yet. Delete it
afterwards: `pymachine delete -f dev`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from make_screenshots import DEV, settle, until  # this folder is the script's: sys.path[0]

from pymachine.app.gui.main import make_app
from pymachine.app.gui.main_window import MainWindow
from pymachine.hostvm import machines

PROJECT = Path("/var/tmp/shots-project")  # outside the shared temp folder: shares may not nest


def main(out: str) -> int:
    if not machines.exists(DEV):
        machines.create(DEV, cpus=1, memory="1G", driver="qemu")
    if machines.get(DEV).state != "running":
        machines.start(DEV, lambda v: print(f"  {v}"))
    app = make_app()
    window = MainWindow(tray=False)
    window.setGeometry(40, 30, 1200, 760)
    window.show()
    until(app, lambda: window.machines.select(DEV))
    window.machines.act("settings")
    dialog = window.machines.settings_dialog
    until(app, lambda: dialog.ctx is not None)
    dialog.cpus.setValue(2)
    dialog.memory.setValue(2.0)
    dialog.disk.setValue(dialog.disk.value() + 12)
    PROJECT.mkdir(exist_ok=True)
    dialog.pick_folder = lambda: str(PROJECT)  # type: ignore[method-assign]
    dialog.add_button.click()
    dialog.set_readonly(dialog.table.rowCount() - 1, True)
    dialog.adjustSize()
    dialog.move(window.x() + 220, window.y() + 90)
    settle(app)
    frame = dialog.frameGeometry()
    target = Path(out) / "machine-settings.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(str(target))
    print(target)
    dialog.reject()
    window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
