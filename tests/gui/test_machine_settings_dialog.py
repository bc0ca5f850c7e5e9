"""The machine Settings dialog against the real façade, on a created machine that is not running (no VM): host
limits on the spin boxes, grow-only disk, shares with Add/Remove/read-only, field errors under their field,
the notice said before Apply, and Apply writing config.json and growing the real qcow2."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.gui import wait_idle

from pymachine.app.gui.machines_panel import MachinesPanel
from pymachine.app.gui.settings_dialog import MachineSettingsDialog, notice_text
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machine_settings as ms
from pymachine.hostvm import machines, paths, savestate, store
from pymachine.hostvm.config import GiB, MiB, Share


@pytest.fixture
def machine(gui_home: Path, tmp_path: Path) -> str:
    """A created, never started machine (qemu driver): config.json sharing tmp/a, and a real 1 GiB qcow2."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    (tmp_path / "a").mkdir()
    cfg = cfgmod.build("dev", ncpus_host=cfgmod.host_cpus(), fallback_driver="qemu", driver="qemu", cpus=1,
                       memory="1G", disk="1G", home_mount=False, mounts=[str(tmp_path / "a")])  # fmt: skip
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mp.disk), "1G"], check=True)
    store.write_json(mp.config, cfg.to_json())
    return "dev"


def _dialog(qtbot, name: str) -> MachineSettingsDialog:  # type: ignore[no-untyped-def]
    dialog = MachineSettingsDialog(name)
    qtbot.addWidget(dialog)
    dialog.show()
    wait_idle(qtbot)
    assert dialog.ctx is not None and dialog.form.isEnabled()
    return dialog


def _virtual_size(path: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True)
    return int(json.loads(out.stdout)["virtual-size"])


def test_apply_changes_cpus_memory_disk_and_shares(qtbot, machine: str, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    dialog = _dialog(qtbot, machine)
    limits = ms.local_limits()
    assert dialog.cpus.maximum() == limits.cpus and dialog.cpus.value() == 1
    assert limits.memory and abs(dialog.memory.maximum() - limits.memory / GiB) < 0.01
    assert dialog.disk.minimum() == dialog.disk.value() == 1.0  # grow only
    assert not dialog.apply_button.isEnabled() and dialog.restart_button.isHidden()
    assert dialog.notice.text().startswith("Changes apply at the next start.")

    dialog.cpus.setValue(min(2, limits.cpus))
    dialog.memory.setValue(1.5)
    dialog.disk.setValue(3)
    dialog.pick_folder = lambda: str(tmp_path / "b")  # type: ignore[method-assign]
    dialog.add_button.click()
    dialog.set_readonly(0, True)  # the existing share becomes read-only
    assert "memory 1G → 1536M" in dialog.summary.text() and "disk 1G → 3G" in dialog.summary.text()
    assert f"shares {tmp_path / 'b'}" in dialog.summary.text()
    assert dialog.apply_button.isEnabled()

    with qtbot.waitSignal(dialog.applied) as applied:
        dialog.apply_button.click()
    result, restart = applied.args
    assert restart is False and not result.running
    cfg = machines.load_config(machine)
    assert (cfg.cpus, cfg.memory, cfg.disk) == (min(2, limits.cpus), 1536 * MiB, 3 * GiB)
    assert cfg.shares == [Share(str(tmp_path / "a"), readonly=True), Share(str(tmp_path / "b"))]
    assert _virtual_size(paths.machine(machine).disk) == 3 * GiB


def test_field_errors_show_under_their_field_and_wrap(qtbot, machine: str, tmp_path: Path) -> None:
    deep = tmp_path / "a" / ("a-rather-long-folder-name-" * 4) / "inside"
    deep.mkdir(parents=True)
    dialog = _dialog(qtbot, machine)
    dialog.resize(560, 500)
    dialog.pick_folder = lambda: str(deep)  # type: ignore[method-assign]
    dialog.add_button.click()
    error = dialog.errors["shares"]
    assert error.isVisible() and f"overlaps the share {tmp_path / 'a'}" in error.text()
    assert error.wordWrap() and error.height() > 2 * error.fontMetrics().height()  # on several lines
    assert not dialog.apply_button.isEnabled()
    assert not dialog.errors["cpus"].isVisible()
    dialog.table.selectRow(1)
    dialog.remove_button.click()
    assert not error.isVisible() and not dialog.apply_button.isEnabled()  # back to no change

    # the façade's own refusal at Apply (`pymachine mount add` shared the folder meanwhile) lands there too
    other = tmp_path / "other"
    other.mkdir()
    dialog.pick_folder = lambda: str(other)  # type: ignore[method-assign]
    dialog.add_button.click()
    assert dialog.apply_button.isEnabled()
    machines.mount_add(machine, str(other))
    dialog.submit()
    wait_idle(qtbot)
    assert f"'{other}' is already shared" in dialog.errors["shares"].text()
    assert dialog.banner.isVisible() and dialog.isVisible() and dialog.result is None
    assert machines.load_config(machine).shares == [Share(str(tmp_path / "a")), Share(str(other))]


def test_the_saved_state_is_said_to_be_discarded_before_apply(qtbot, machine: str) -> None:
    f = savestate.files(machine)
    f.temp.write_bytes(b"x" * 4096)
    savestate.commit(machine, savestate.meta_for({}, "tcg", 4096, savestate.crc32_file(f.temp)))
    dialog = _dialog(qtbot, machine)
    dialog.memory.setValue(2)
    assert "The saved state is discarded: the next start boots cold." in dialog.notice.text()
    ctx = ms.SettingsContext(machines.load_config(machine), ms.local_limits(), True, False)
    running = notice_text("dev", ctx)
    assert "stay pending until then" in running and "Apply and restart" in running


def test_the_machines_panel_opens_it_for_the_selected_machine(qtbot, machine: str) -> None:
    panel = MachinesPanel()
    qtbot.addWidget(panel)
    wait_idle(qtbot)
    panel.select(machine)
    button = panel.buttons["settings"]
    assert button.isEnabled() and button.text() == "S&ettings…"
    button.click()
    wait_idle(qtbot)
    dialog = panel.settings_dialog
    assert dialog.windowTitle() == "Settings — dev" and dialog.cpus.value() == 1
    dialog.memory.setValue(2)
    with qtbot.waitSignal(dialog.applied):
        dialog.apply_button.click()
    assert "memory 1G → 2G (applies at the next start)" in panel.progress_label.text()
    panel.timer.stop()
