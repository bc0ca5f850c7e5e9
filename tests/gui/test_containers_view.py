"""Containers view against a real guest agent on this host: list, ports as links, live log, exec shell,
inspect, stop/start/restart/remove of real containers."""

from __future__ import annotations

import socket
from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from support.gui import captured_urls, engine_factory, wait_idle

from pymachine.app.gui.containers_panel import ContainersPanel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _click_link(qtbot, panel: ContainersPanel, cid: str) -> None:
    """A real mouse click on the link text in the Ports cell (the delegate finds the link under it)."""
    view = panel.table.view
    index = panel.table.proxy.mapFromSource(
        panel.table.model.index(panel.table.model.row_of(cid), panel.table.column("Ports"))
    )
    rect = view.visualRect(index)
    qtbot.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center() - QPoint(rect.width() // 2 - 10, 0)
    )


def _state(panel: ContainersPanel, name: str) -> str:
    row = next(r for r in panel.rows if r["_summary"]["Names"] == name)
    return row["State"]["Status"]


def test_containers_of_a_real_engine(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    port = _free_port()
    c = dc.containers.run(
        "pymachine/busybox",
        ["sh", "-c", "echo hello-from-gui; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done"],
        name="gui-web",
        ports={"80/tcp": port},
        detach=True,
    )
    panel = ContainersPanel(engine_factory(agent_engine))
    qtbot.addWidget(panel)
    panel.resize(1280, 800)
    panel.show()
    panel.confirm = lambda _text: True  # type: ignore[method-assign]

    panel.set_machine("m", False)
    assert "not running" in panel.empty.text()
    panel.set_machine("m", True)
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: any(r["Id"] == c.id for r in panel.rows), timeout=30000)
    assert panel.select("gui-web")
    assert panel.table.cell(c.id, "Name") == "gui-web"
    assert panel.table.cell(c.id, "Image") == "pymachine/busybox"
    assert panel.table.cell(c.id, "State") == "Running"
    assert panel.table.cell(c.id, "Uptime")  # uptime
    # the port as people say it: host port → container name and its port, a link to the browser
    assert panel.table.cell_links(c.id, "Ports") == [
        (f"localhost:{port} → gui-web:80", f"http://localhost:{port}/")
    ]
    with captured_urls() as opened:
        _click_link(qtbot, panel, c.id)
        panel.table.view.setFocus()
        qtbot.keyClick(panel.table.view, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    assert opened == [f"http://localhost:{port}/"] * 2

    # live log: the first line, then lines written after the view opened
    panel.tabs.setCurrentWidget(panel.logs)
    qtbot.waitUntil(lambda: "hello-from-gui" in panel.logs.contents(), timeout=30000)
    seen = panel.logs.contents().count("tick-")
    qtbot.waitUntil(lambda: panel.logs.contents().count("tick-") > seen + 1, timeout=30000)

    # inspect
    panel.tabs.setCurrentWidget(panel.inspect)
    assert panel.inspect.data["Id"] == c.id
    assert '"Name": "/gui-web"' in panel.inspect.text.toPlainText()
    panel.inspect.find.setText("Running")
    assert panel.inspect.find_next()

    # exec: a shell over the exec attach socket
    panel.tabs.setCurrentWidget(panel.terminal)
    assert panel.terminal.open_button.isEnabled()
    panel.terminal.open_button.click()
    qtbot.waitUntil(panel.terminal.input.isEnabled, timeout=30000)  # the exec socket is open
    panel.terminal.input.setText("echo $((6*7)); cat /etc/hostname")
    panel.terminal.send_line()
    qtbot.waitUntil(lambda: "42" in panel.terminal.contents(), timeout=30000)
    panel.terminal.input.setText("exit 3")
    panel.terminal.send_line()
    qtbot.waitUntil(lambda: "exit code 3" in panel.terminal.contents(), timeout=30000)
    qtbot.waitUntil(lambda: not panel.terminal.input.isEnabled(), timeout=10000)

    # stop, start, restart, remove
    panel.buttons["stop"].click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: _state(panel, "gui-web") == "exited", timeout=60000)
    c.reload()
    assert c.status == "exited"
    panel.select("gui-web")
    assert panel.buttons["start"].isEnabled() and not panel.buttons["stop"].isEnabled()
    panel.buttons["start"].click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: _state(panel, "gui-web") == "running", timeout=60000)
    started = dc.api.inspect_container(c.id)["State"]["StartedAt"]
    panel.select("gui-web")
    panel.buttons["restart"].click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: dc.api.inspect_container(c.id)["State"]["StartedAt"] != started, timeout=60000)
    panel.select("gui-web")
    panel.buttons["remove"].click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: not any(r["Id"] == c.id for r in panel.rows), timeout=60000)
    assert c.id not in [x.id for x in dc.containers.list(all=True)]
    assert "No containers" in panel.empty.text()
    panel.shutdown()
