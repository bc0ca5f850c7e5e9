"""Containers view against a real guest agent on this host: list, ports as links, live log, exec shell,
inspect, stop/start/restart/remove of real containers."""

from __future__ import annotations

import socket
from pathlib import Path

from PySide6.QtCore import Qt
from support.gui import captured_urls, engine_factory, wait_idle

from pymachine.app.gui.containers_panel import ContainersPanel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    i = [r["Id"] for r in panel.rows].index(c.id)
    assert panel.table.item(i, 0).text() == "gui-web"
    assert panel.table.item(i, 1).text() == "pymachine/busybox"
    assert panel.table.item(i, 2).text() == "Running"
    assert panel.table.item(i, 3).text()  # uptime
    link = panel.table.cellWidget(i, 4)
    assert f"http://localhost:{port}/" in link.text() and f"localhost:{port}" in link.text()
    with captured_urls() as opened:
        link.linkActivated.emit(f"http://localhost:{port}/")
        panel.table.setFocus()
        qtbot.keyClick(panel.table, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
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
