"""The Volumes tab against a real guest agent: which containers use each volume, inspect, search, removing a
volume in use (the engine's refusal in words), prune keeping the used one, remove."""

from __future__ import annotations

from pathlib import Path

from support.gui import engine_factory, wait_idle

from pymachine.app.gui.machine_state import MachineView
from pymachine.app.gui.volumes_panel import VolumesPanel


def test_volumes_list_inspect_remove_prune(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    dc.volumes.create("gui-data")
    dc.volumes.create("gui-spare")
    c = dc.containers.create(
        "pymachine/busybox", ["true"], name="gui-db", volumes={"gui-data": {"bind": "/data"}}
    )
    try:
        panel = VolumesPanel(engine_factory(agent_engine))
        qtbot.addWidget(panel)
        panel.resize(900, 600)
        panel.show()
        panel.confirm = lambda _text: True  # type: ignore[method-assign]
        panel.set_machine("m", MachineView("m", "stopping", "", None, "stop"))
        assert panel.empty.text() == "m is stopping…"
        panel.set_machine("m", MachineView("m", "running", "ready"))
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: {"gui-data", "gui-spare"} <= {v["Name"] for v in panel.rows}, timeout=30000)
        assert panel.table.cell("gui-data", "Used by") == "gui-db"
        assert panel.table.cell("gui-spare", "Used by") == "—"
        assert panel.select("gui-data")
        assert panel.inspect.data["Name"] == "gui-data" and "_users" not in panel.inspect.data

        panel.table.search.setText("gui-db")  # search finds a volume by the container using it
        assert panel.table.visible_keys() == ["gui-data"]
        panel.table.search.clear()

        # in use: the engine refuses, and the window says so as message + hint
        panel.select("gui-data")
        panel.remove_button.click()
        wait_idle(qtbot)
        assert panel.banner.isVisible()
        assert "removing volume gui-data" in panel.banner.message.text()
        assert "remove the containers that use it first" in panel.banner.hint.text()
        assert "APIError" not in panel.banner.message.text()

        panel.prune_button.click()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: "gui-spare" not in {v["Name"] for v in panel.rows}, timeout=30000)
        assert "gui-data" in {v["Name"] for v in panel.rows}
        assert panel.status.text().startswith("Pruned ")

        c.remove()
        panel.select("gui-data")
        panel.remove_button.click()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: "gui-data" not in {v["Name"] for v in panel.rows}, timeout=30000)
        assert panel.inspect.data is None
        assert "gui-data" not in [v.name for v in dc.volumes.list()]
    finally:
        for obj in (c,):
            try:
                obj.remove(force=True)
            except Exception:  # noqa: BLE001 - removed by the test
                pass
        for name in ("gui-data", "gui-spare"):
            try:
                dc.volumes.get(name).remove(force=True)
            except Exception:  # noqa: BLE001 - removed by the test
                pass
