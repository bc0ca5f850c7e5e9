"""Multi-select and the right-click menu on a real guest agent: several containers, images and volumes
selected, one confirmation for all, a bulk remove where one item fails (every failure listed by name, the
others done); the row menu's actions (open port, copy ID, logs, terminal, inspect, stop several)."""

from __future__ import annotations

import socket
from pathlib import Path

from PySide6.QtGui import QContextMenuEvent, QGuiApplication
from PySide6.QtWidgets import QApplication
from support.gui import captured_urls, engine_factory, wait_idle

from pymachine.app.gui.containers_panel import ContainersPanel
from pymachine.app.gui.images_panel import ImagesPanel
from pymachine.app.gui.machine_state import MachineView
from pymachine.app.gui.volumes_panel import VolumesPanel

RUNNING = MachineView("m", "running", "ready")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def right_click(panel, key: str):  # noqa: ANN001, ANN201
    """A context-menu event on the row's cell, as a right click sends it; the menu it pops up."""
    view = panel.table.view
    index = panel.table.proxy.mapFromSource(panel.table.model.index(panel.table.model.row_of(key), 0))
    pos = view.visualRect(index).center()
    event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos))
    QApplication.sendEvent(view.viewport(), event)
    assert panel.menu.isVisible()
    return panel.menu


def action(menu, text: str):  # noqa: ANN001, ANN201
    found = [a for a in menu.actions() if a.text() == text]
    assert found, f"{text!r} not in {[a.text() for a in menu.actions()]}"
    return found[0]


def show(qtbot, panel) -> None:  # noqa: ANN001
    qtbot.addWidget(panel)
    panel.resize(1100, 700)
    with qtbot.waitExposed(panel):  # a context manager: it waits on leaving the block
        panel.show()


def test_containers_bulk_remove_lists_each_failure_and_the_menu(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    port = _free_port()
    web = dc.containers.run(
        "pymachine/busybox", ["sleep", "600"], name="gb-web", ports={"80/tcp": port}, detach=True
    )
    made = [web] + [
        dc.containers.run("pymachine/busybox", ["sleep", "600"], name=f"gb-{n}", detach=True)
        for n in ("a", "b", "c")
    ]
    try:
        panel = ContainersPanel(engine_factory(agent_engine))
        show(qtbot, panel)
        asked: list[str] = []
        panel.confirm = lambda text: asked.append(text) or True  # type: ignore[method-assign]
        panel.set_machine("m", RUNNING)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: {c.id for c in made} <= {r["Id"] for r in panel.rows}, timeout=30000)
        panel.timer.stop()  # the list the window shows stays the one read before the out-of-band removal

        # the row menu of one container
        menu = right_click(panel, web.id)
        assert panel.table.selected_keys() == [web.id]
        with captured_urls() as opened:
            action(menu, f"Open localhost:{port} in a browser").trigger()
        assert opened == [f"http://localhost:{port}/"]
        action(right_click(panel, web.id), "Copy ID").trigger()
        assert QGuiApplication.clipboard().text() == web.id[:12]
        action(right_click(panel, web.id), "Inspect").trigger()
        assert panel.tabs.currentWidget() is panel.inspect and panel.inspect.data["Id"] == web.id
        action(right_click(panel, web.id), "Logs").trigger()
        assert panel.tabs.currentWidget() is panel.logs
        action(right_click(panel, web.id), "Terminal").trigger()
        assert panel.tabs.currentWidget() is panel.terminal
        qtbot.waitUntil(panel.terminal.input.isEnabled, timeout=30000)
        panel.terminal.stop()

        # several selected: a right click on one of them keeps the selection; the verbs say how many
        ids = [made[1].id, made[2].id, made[3].id]
        assert panel.table.select_keys(ids) == 3
        menu = right_click(panel, made[2].id)
        assert sorted(panel.table.selected_keys()) == sorted(ids)
        assert action(menu, "Stop 3 containers").isEnabled()
        assert not action(menu, "Start 3 containers").isEnabled()  # all running
        assert not action(menu, "Terminal").isEnabled()  # one container's, not three

        # bulk remove, with two of them gone behind the window's back: one confirmation, both failures named
        dc.containers.get("gb-a").remove(force=True)
        dc.containers.get("gb-b").remove(force=True)
        action(menu, "Remove 3 containers…").trigger()
        assert len(asked) == 1 and "Remove 3 containers (gb-a, gb-b, gb-c)?" in asked[0]
        wait_idle(qtbot)
        assert panel.banner.isVisible()
        assert "Remove: 2 of 3 containers failed." in panel.banner.message.text()
        hint = panel.banner.hint.text()
        assert "gb-a: remove gb-a:" in hint and "gb-b: remove gb-b:" in hint and "gb-c" not in hint
        assert "NotFound" not in hint and "APIError" not in hint
        qtbot.waitUntil(lambda: "gb-c" not in {r["_summary"]["Names"] for r in panel.rows}, timeout=30000)
        assert [c.name for c in dc.containers.list(all=True) if c.name.startswith("gb-")] == ["gb-web"]
        panel.shutdown()
        wait_idle(qtbot)
    finally:
        for c in made:
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - removed by the test already
                pass


def test_volumes_and_images_bulk_remove_with_one_refused(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    for name in ("gbv-used", "gbv-1", "gbv-2"):
        dc.volumes.create(name)
    user = dc.containers.create(
        "pymachine/busybox", ["true"], name="gbv-user", volumes={"gbv-used": {"bind": "/d"}}
    )
    base = dc.images.get("pymachine/busybox")
    base.tag("gb-img", "one")
    base.tag("gb-img", "two")
    try:
        vols = VolumesPanel(engine_factory(agent_engine))
        show(qtbot, vols)
        asked: list[str] = []
        vols.confirm = lambda text: asked.append(text) or True  # type: ignore[method-assign]
        vols.set_machine("m", RUNNING)
        wait_idle(qtbot)
        qtbot.waitUntil(
            lambda: {"gbv-used", "gbv-1", "gbv-2"} <= {v["Name"] for v in vols.rows}, timeout=30000
        )
        assert vols.table.select_keys(["gbv-used", "gbv-1", "gbv-2"]) == 3
        menu = right_click(vols, "gbv-1")
        action(menu, "Remove 3 volumes…").trigger()
        assert len(asked) == 1 and "In use: gbv-used (used by gbv-user)" in asked[0]
        wait_idle(qtbot)
        assert "Remove: 1 of 3 volumes failed." in vols.banner.message.text()
        assert "gbv-used: removing volume gbv-used" in vols.banner.hint.text()
        assert "remove the containers that use it first" in vols.banner.hint.text()
        qtbot.waitUntil(lambda: {v["Name"] for v in vols.rows} & {"gbv-1", "gbv-2"} == set(), timeout=30000)
        assert "gbv-used" in {v.name for v in dc.volumes.list()}
        assert vols.status.text() == "Remove: 1 of 3 volumes failed."
        user.remove()  # no longer used: one volume, removed with the Remove button
        vols.refresh()
        wait_idle(qtbot)
        assert vols.table.select_keys(["gbv-used"]) == 1
        vols.remove_button.click()
        wait_idle(qtbot)
        assert vols.status.text() == "Removed volume gbv-used." and not vols.banner.isVisible()
        user = dc.containers.create("pymachine/busybox", ["true"], name="gbv-user")  # busybox stays in use

        images = ImagesPanel(engine_factory(agent_engine))
        show(qtbot, images)
        images.confirm = lambda text: asked.append(text) or True  # type: ignore[method-assign]
        images.set_machine("m", RUNNING)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: sum(r["Repository"] == "gb-img" for r in images.rows) == 2, timeout=30000)
        keys = [images.table.model.key(r) for r in images.rows if r["Repository"] == "gb-img"]
        keys.append(
            next(images.table.model.key(r) for r in images.rows if r["Repository"] == "pymachine/busybox")
        )
        assert images.table.select_keys(keys) == 3
        menu = right_click(images, keys[0])
        action(menu, "Copy ID").trigger()
        assert QGuiApplication.clipboard().text().split("\n")[0] == base.id.removeprefix("sha256:")[:12]
        # gb-img:two goes behind the window's back, and busybox is used by gbv-user (the engine refuses):
        # both failures are listed by name, gb-img:one is removed
        dc.images.remove("gb-img:two")
        action(menu, "Remove 3 images…").trigger()
        assert "Remove 3 images (" in asked[-1] and len(asked) == 3
        wait_idle(qtbot)
        failed = images.banner.hint.text()
        assert "Remove: 2 of 3 images failed." in images.banner.message.text(), failed
        assert "gb-img:two: removing gb-img:two: No such image" in failed
        assert "pymachine/busybox:latest: removing pymachine/busybox:latest: conflict" in failed
        qtbot.waitUntil(lambda: not any(r["Repository"] == "gb-img" for r in images.rows), timeout=30000)
        assert any(r["Repository"] == "pymachine/busybox" for r in images.rows)
    finally:
        user.remove(force=True)
        for name in ("gbv-used", "gbv-1", "gbv-2"):
            try:
                dc.volumes.get(name).remove()
            except Exception:  # noqa: BLE001 - removed by the test already
                pass
        for tag in ("gb-img:one", "gb-img:two"):
            try:
                dc.images.remove(tag)
            except Exception:  # noqa: BLE001 - removed by the test already
                pass
