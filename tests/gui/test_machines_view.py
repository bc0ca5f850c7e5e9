"""Machines view and create dialog against an isolated PYMACHINE_HOME: real config validation, a real (cheap)
machine creation, a real start failure with its hint and log, delete. No VM boots here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gui import wait_idle

from pymachine.app.gui.create_dialog import CreateDialog, validate
from pymachine.app.gui.machines_panel import MachinesPanel
from pymachine.hostvm import machines, paths
from pymachine.hostvm.errors import StageFailed
from pymachine.hostvm.progress import StageProgress


def test_empty_state_says_what_to_do(qtbot, gui_home: Path) -> None:
    panel = MachinesPanel()
    qtbot.addWidget(panel)
    wait_idle(qtbot)
    assert panel.stack.currentWidget() is panel.empty
    assert "No machines yet" in panel.empty.text() and "Create" in panel.empty.text()
    assert not panel.buttons["start"].isEnabled() and panel.buttons["create"].isEnabled()


def test_create_dialog_shows_validator_errors_next_to_fields(qtbot, gui_home: Path) -> None:
    dialog = CreateDialog()
    qtbot.addWidget(dialog)
    dialog.edits["name"].setText("Bad_Name")
    dialog.edits["cpus"].setText("999")
    dialog.edits["memory"].setText("lots")
    dialog.edits["disk"].setText("8G")
    assert not dialog.create_button.isEnabled()
    assert "a-z, 0-9" in dialog.errors["name"].text() and not dialog.errors["name"].isHidden()
    assert "between 1 and" in dialog.errors["cpus"].text()
    assert "is not a size" in dialog.errors["memory"].text()
    assert dialog.errors["disk"].isHidden() and dialog.errors["disk"].text() == ""
    # the same validator `pymachine create` runs: its answer, field by field
    assert set(validate(dialog.values())) == {"name", "cpus", "memory"}

    dialog.edits["name"].setText("dev-1")
    dialog.edits["cpus"].setText("1")
    dialog.edits["memory"].setText("512M")
    assert all(label.isHidden() for label in dialog.errors.values())
    assert dialog.create_button.isEnabled()


def _create_through_dialog(qtbot, panel: MachinesPanel, name: str) -> None:
    dialog = panel.open_create()
    qtbot.addWidget(dialog)
    dialog.edits["name"].setText(name)
    dialog.edits["cpus"].setText("1")
    dialog.edits["memory"].setText("512M")
    dialog.driver.setCurrentText("qemu")  # the direct driver: no libvirtd needed to create or inspect
    with qtbot.waitSignal(dialog.created, timeout=900_000):
        dialog.create_button.click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: name in [m.name for m in panel.rows], timeout=30000)


def test_create_start_failure_and_delete(qtbot, gui_home: Path) -> None:
    panel = MachinesPanel()
    qtbot.addWidget(panel)
    panel.resize(1280, 800)
    panel.show()
    wait_idle(qtbot)
    _create_through_dialog(qtbot, panel, "gui-1")

    assert machines.exists("gui-1")
    panel.select("gui-1")
    row = [panel.table.cell("gui-1", c) for c in range(panel.table.model.columnCount())]
    assert row[:5] == ["gui-1", "stopped", "1", "512 MiB", "8 GiB"]
    assert panel.buttons["start"].isEnabled() and not panel.buttons["stop"].isEnabled()
    assert not panel.buttons["log"].isEnabled()  # nothing has written a log yet

    # a real start failure, before any VM boots: the machine's base image vanished
    cfg_path = paths.machine("gui-1").config
    cfg = json.loads(cfg_path.read_text())
    cfg["image"]["kernel"] = str(gui_home / "gone" / "vmlinuz")
    cfg_path.write_text(json.dumps(cfg))
    # start removes the old console log first; the banner falls back to the host agent's log
    paths.machine("gui-1").agent_log.write_text("host agent says: never started\n")
    panel.buttons["start"].click()
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=60000)
    assert "stage 1 of" in panel.banner.message.text() and "base image" in panel.banner.message.text()
    assert "recreate the machine" in panel.banner.hint.text()
    assert panel.banner.show_log.isVisible()
    panel.banner.show_log.click()
    assert "host agent says: never started" in panel.banner.dialog.text.toPlainText()
    assert panel.progress.isHidden()
    wait_idle(qtbot)
    panel.select("gui-1")
    assert panel.buttons["log"].isEnabled()
    paths.machine("gui-1").console_log.write_text("console: boot messages\n")
    panel.buttons["log"].click()  # both logs, one tab each
    texts = [t.toPlainText() for t in panel.log_dialog.texts]
    assert texts == ["console: boot messages\n", "host agent says: never started\n"]

    panel.confirm = lambda _text: True  # type: ignore[method-assign]
    panel.select("gui-1")
    panel.buttons["delete"].click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: panel.rows == [], timeout=30000)
    assert not machines.exists("gui-1")
    assert panel.stack.currentWidget() is panel.empty


def test_stage_progress_drives_the_bar(qtbot, gui_home: Path) -> None:
    """The values a real create and a real (failing) start emit, fed to the panel as the worker feeds them."""
    seen: list[object] = []
    machines.create("gui-2", cpus=1, memory="512M", driver="qemu", progress=seen.append)
    cfg_path = paths.machine("gui-2").config
    cfg = json.loads(cfg_path.read_text())
    cfg["image"]["kernel"] = str(gui_home / "gone" / "vmlinuz")  # start fails in its first stage
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(StageFailed) as failed:
        machines.start("gui-2", seen.append)
    stages = [v for v in seen if isinstance(v, StageProgress)]
    created = [v for v in stages if v.source == "create"]
    started = [v for v in stages if v.source == "start"]
    assert [(v.name, v.state) for v in created][-1] == ("machine files", "done")
    assert [(v.step, v.name, v.state) for v in started] == [
        (1, "domain up", "running"),
        (1, "domain up", "failed"),
    ]
    assert failed.value.stage == started[-1] and "base image" in failed.value.message

    panel = MachinesPanel()
    qtbot.addWidget(panel)
    for value in created:
        panel._progress(value)
    assert (panel.progress.maximum(), panel.progress.value()) == (created[-1].total, created[-1].total)
    assert "machine files" in panel.progress_label.text()
    panel._progress(started[0])
    assert (panel.progress.maximum(), panel.progress.value()) == (started[0].total, 0)
    assert "domain up" in panel.progress_label.text()
    # The host agent starts while start's later stages run: its steps detail the current stage, the bar stays.
    panel.busy["gui-2"] = "start"
    panel._progress(started[0], "gui-2")
    panel._progress(StageProgress(2, 3, "ssh link", source="host agent"), "gui-2")
    assert panel.progress_label.text() == "start 1/5: domain up — host agent: ssh link"
    assert panel.progress.value() == 0
    del panel.busy["gui-2"]
    panel._progress("a note from the façade")
    assert panel.progress_label.text() == "a note from the façade"
    machines.delete("gui-2", force=True)
