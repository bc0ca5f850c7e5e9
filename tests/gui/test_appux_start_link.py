"""A stopped machine's Containers (Images, Volumes, Apps) tab offers "Start NAME" where the containers would
be, as Docker Desktop offers Start over its stopped engine; the link runs the Machines tab's own start, whose
progress and error show there. The machine's start fails in its first stage (its kernel is gone): a real
start through the façade, no VM boots."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from support.gui import wait_idle

from pymachine.app.gui.main_window import MainWindow
from pymachine.hostvm import machines, paths


def test_the_start_link_on_a_stopped_machines_tabs_starts_it(qtbot, gui_home: Path) -> None:
    machines.create("gui-link", cpus=1, memory="512M", driver="qemu", home_mount=False)
    cfg_path = paths.machine("gui-link").config
    cfg = json.loads(cfg_path.read_text())
    cfg["image"]["kernel"] = str(gui_home / "gone" / "vmlinuz")
    cfg_path.write_text(json.dumps(cfg))

    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: window.machines.select("gui-link"), timeout=30000)
    for tab in (window.containers, window.images, window.volumes, window.apps):
        qtbot.waitUntil(lambda tab=tab: "Start gui-link</a>" in tab.empty.text(), timeout=10000)
        assert tab.empty.textFormat() == Qt.TextFormat.RichText
        assert "is not running" in tab.empty.text()

    window.show_tab("containers")
    window.containers.empty.linkActivated.emit("start")
    assert window.tabs.currentWidget() is window.machines  # where the start's progress and error show
    qtbot.waitUntil(lambda: not window.machines.banner.isHidden(), timeout=60000)
    assert "stage 1 of 5: domain up failed" in window.machines.banner.message.text()
    wait_idle(qtbot)
    # down again: the link is back; nothing is offered without a machine
    qtbot.waitUntil(lambda: "Start gui-link</a>" in window.containers.empty.text(), timeout=10000)
    machines.delete("gui-link", force=True)
    window.machines.refresh()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: "create one" in window.containers.empty.text(), timeout=10000)
    assert "<a " not in window.containers.empty.text()
    window.shutdown()
