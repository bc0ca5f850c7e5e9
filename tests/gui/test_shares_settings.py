"""Settings → Shared folders: list, Add (refusals shown), Remove, on a machine that is not running (no VM)."""

from __future__ import annotations

from pathlib import Path

from pymachine.app.gui.settings_panel import SettingsPanel
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines, paths, store


def _machine(name: str, shared: Path) -> None:
    cfg = cfgmod.build(name, ncpus_host=2, fallback_driver="qemu", driver="qemu", home_mount=False,
                       mounts=[str(shared)])  # fmt: skip
    paths.machine(name).dir.mkdir(parents=True)
    store.write_json(paths.machine(name).config, cfg.to_json())


def test_shares_list_add_and_remove(qtbot, gui_home: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _machine("dev", tmp_path / "a")
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    box = panel.shares
    assert box.machine.currentText() == "dev"
    assert box.list.item(0).text().startswith(f"{tmp_path / 'a'}  — ")

    box.path.setText("relative/dir")
    box.add()
    assert "is not an absolute path" in box.status.text()
    assert [s.path for s in machines.load_config("dev").shares] == [str(tmp_path / "a")]

    box.path.setText(str(tmp_path / "b"))
    box.readonly.setChecked(True)
    box.add()
    assert "applies at the next start" in box.status.text()
    assert machines.load_config("dev").shares[1] == cfgmod.Share(str(tmp_path / "b"), readonly=True)
    assert box.list.count() == 2 and "(read-only)" in box.list.item(1).text()

    box.list.setCurrentRow(0)
    box.remove()
    assert [s.path for s in machines.load_config("dev").shares] == [str(tmp_path / "b")]
    assert "no longer shares" in box.status.text()


def test_shares_box_without_machines(qtbot, gui_home: Path) -> None:
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    assert "No machine yet" in panel.shares.status.text()
    assert not panel.shares.add_button.isEnabled()
