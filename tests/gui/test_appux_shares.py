"""Sync shares in the app, as `pymachine mount add --sync` makes them: the Settings tab's shared folders and a
machine's Settings dialog show them, make them and keep them; Remove acts on the path, not on the row's text.
On a created machine that is not running (no VM): what these widgets do is config.json through the façade."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.gui import wait_idle

from pymachine.app.cli.machine_cmd import mount_rows
from pymachine.app.gui.settings_dialog import MachineSettingsDialog
from pymachine.app.gui.settings_panel import SettingsPanel
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines, paths, store
from pymachine.hostvm.config import Share


def _machine(name: str, *mounts: str, disk: bool = False) -> None:
    cfg = cfgmod.build(name, ncpus_host=cfgmod.host_cpus(), fallback_driver="qemu", driver="qemu", cpus=1,
                       memory="1G", disk="1G", home_mount=False, mounts=list(mounts))  # fmt: skip
    mp = paths.machine(name)
    mp.dir.mkdir(parents=True)
    if disk:  # the Settings dialog reads the disk's size
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mp.disk), "1G"], check=True)
    store.write_json(mp.config, cfg.to_json())


def test_settings_tab_adds_a_sync_share_and_removes_a_path_with_two_spaces(
    qtbot, gui_home: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "two  spaces"  # the old Remove cut the row's text at the first double space
    (tmp_path / "src").mkdir()
    odd.mkdir()
    _machine("dev", str(odd))
    box = SettingsPanel().shares
    qtbot.addWidget(box)

    box.path.setText(str(tmp_path / "src"))
    box.readonly.setChecked(True)
    box.sync.setChecked(True)  # a sync share is read-write: the boxes exclude each other
    assert not box.readonly.isChecked()
    box.add()
    assert "applies at the next start" in box.status.text(), box.status.text()
    assert machines.load_config("dev").shares == [Share(str(odd)), Share(str(tmp_path / "src"), sync=True)]
    texts = [box.list.item(i).text() for i in range(box.list.count())]
    assert texts[1] == f"{tmp_path / 'src'}  — synced copy", texts

    box.list.setCurrentRow(0)
    box.remove()
    assert "no longer shares" in box.status.text(), box.status.text()
    assert machines.load_config("dev").shares == [Share(str(tmp_path / "src"), sync=True)]


def test_a_sync_shares_state_reads_as_mount_list_says(
    qtbot, gui_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row's note is the CLI's (share_hotplug.note for both): here the state a running machine's agent
    reports, laid on the façade's own Machine value as syncshare_state.annotate lays it."""
    (tmp_path / "src").mkdir()
    _machine("dev", f"{tmp_path / 'src'}:sync")
    m = machines.get("dev")
    m.shares[0]["sync_state"] = "3 pending"
    monkeypatch.setattr(machines, "get", lambda _name: m)
    box = SettingsPanel().shares
    qtbot.addWidget(box)
    assert box.list.item(0).text() == f"{tmp_path / 'src'}  — synced copy, 3 pending"
    assert mount_rows(m)[1] == (str(tmp_path / "src"), "rw", "sync", "3 pending")


def test_dialog_shows_makes_and_keeps_sync_shares(qtbot, gui_home: Path, tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    for d in ("live", "synced"):
        (tmp_path / d).mkdir()
    _machine("dev", str(tmp_path / "live"), f"{tmp_path / 'synced'}:sync", disk=True)
    dialog = MachineSettingsDialog("dev")
    qtbot.addWidget(dialog)
    dialog.show()
    wait_idle(qtbot)
    assert dialog.ctx is not None
    checked = [
        [dialog.table.item(r, c).checkState().name for c in (1, 2)] for r in range(dialog.table.rowCount())
    ]
    assert checked == [["Unchecked", "Unchecked"], ["Unchecked", "Checked"]]  # the sync share says so
    # said once: the summary line, not again in the notice under it
    assert dialog.summary.text() == "No changes yet." and "changed" not in dialog.notice.text()

    dialog.set_readonly(0, True)
    dialog.set_sync(0, True)  # the live share becomes a synced copy; read-only goes, as it must
    assert dialog.table.item(0, 1).checkState().name == "Unchecked"
    assert not dialog.errors["shares"].isVisible(), dialog.errors["shares"].text()
    with qtbot.waitSignal(dialog.applied):
        dialog.apply_button.click()
    assert sorted(machines.load_config("dev").shares, key=str) == [
        Share(str(tmp_path / "live"), sync=True),
        Share(str(tmp_path / "synced"), sync=True),
    ]


def test_the_settings_tab_shows_the_selected_machines_shares(qtbot, gui_home: Path, tmp_path: Path) -> None:
    from pymachine.app.gui.main_window import MainWindow

    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    _machine("a-dev", str(tmp_path / "a"))
    _machine("b-dev", str(tmp_path / "b"))
    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    wait_idle(qtbot)
    box = window.settings.shares
    qtbot.waitUntil(lambda: window.machines.select("b-dev"), timeout=30000)
    # it showed a-dev's, the first by name, whatever the window had selected
    assert box.machine.currentText() == "b-dev"
    assert box.list.item(0).text().startswith(f"{tmp_path / 'b'}  — ")

    _machine("c-dev", str(tmp_path / "c"))  # made by the CLI meanwhile
    window.machines.refresh()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: window.machines.select("c-dev"), timeout=30000)
    assert box.machine.currentText() == "c-dev"
    assert box.list.item(0).text().startswith(f"{tmp_path / 'c'}  — ")
    window.shutdown()
