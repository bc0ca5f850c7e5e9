"""The app's Remove of an image tag that went behind the window's back (`docker rmi` in a terminal): the
banner says "No such image" with the remove's hint (nothing to remove), not the pull advice."""

from __future__ import annotations

from pathlib import Path

from support.gui import engine_factory, wait_idle

from pymachine.app.gui.images_panel import ImagesPanel
from pymachine.hostvm import images_io


def test_removing_a_tag_that_is_already_gone(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    dc.images.get("pymachine/busybox").tag("appux-gone", "1")
    panel = ImagesPanel(engine_factory(agent_engine))
    qtbot.addWidget(panel)
    panel.show()
    panel.confirm = lambda _text: True  # type: ignore[method-assign]
    panel.set_machine("m", True)
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: any(r["Repository"] == "appux-gone" for r in panel.rows), timeout=30000)
    assert panel.select("appux-gone")
    dc.images.remove("appux-gone:1")  # gone before the click
    panel.remove_button.click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=30000)
    assert "No such image: appux-gone:1" in panel.banner.message.text()
    hint = panel.banner.hint.text()
    assert hint.endswith(images_io.REMOVE_MISSING_HINT), hint
    assert "registry" not in hint
