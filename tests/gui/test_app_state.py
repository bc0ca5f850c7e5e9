"""One state, against a real guest agent on this host: the Containers tab follows the machine's state (no
error for a stop the window asked for, none of a machine it no longer shows), the detail pane follows the
selection or clears, a container says "Stopping…" through its stop timeout, a port link with no browser
copies the URL, and Cancel gives a hung pull's window back at once."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import docker
from PySide6.QtGui import QGuiApplication
from support.gui import engine_factory, wait_idle

from pymachine.app.gui.containers_panel import ContainersPanel
from pymachine.app.gui.images_panel import ImagesPanel
from pymachine.app.gui.machine_state import MachineView
from pymachine.hostvm.containers import API_VERSION

UP = MachineView("m", "running", "ready")


def _dead_engine(tmp: Path) -> Any:
    """A client for an engine socket nobody serves (what a machine's engine is while it goes down)."""
    return docker.DockerClient(base_url=f"unix://{tmp / 'no-engine.sock'}", version=API_VERSION, timeout=10)


def _factory(agent: Any, dead: Path) -> Any:
    live = engine_factory(agent)
    return lambda machine: _dead_engine(dead) if machine == "gone" else live(machine)


def _panel(qtbot, factory: Any) -> ContainersPanel:
    panel = ContainersPanel(factory)
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()
    panel.confirm = lambda _text: True  # type: ignore[method-assign]
    return panel


def test_state_sentences_and_no_error_after_a_stop(qtbot, gui_home: Path, agent_engine, tmp_path) -> None:
    panel = _panel(qtbot, _factory(agent_engine, tmp_path))
    stage_view = MachineView("m", "starting", "", None, "start")
    panel.set_machine("m", stage_view)
    assert panel.empty.text() == "m is starting…"
    from pymachine.hostvm.progress import StageProgress

    panel.set_machine("m", MachineView("m", "starting", "", StageProgress(2, 5, "ssh banner"), "start"))
    assert panel.empty.text() == "m is starting — stage 2 of 5: ssh banner"

    # the engine dies while a list is on its way and the window is stopping the machine: no error shows
    panel.set_machine("gone", MachineView("gone", "running", "ready"))
    panel.set_machine("gone", MachineView("gone", "stopping", "", None, "stop"))
    wait_idle(qtbot)
    assert panel.empty.text() == "gone is stopping…"
    assert panel.banner.isHidden()
    panel.set_machine("gone", MachineView("gone", "stopped", ""))
    assert "not running" in panel.empty.text() and "Cannot reach" not in panel.empty.text()

    # an engine that is down while the machine runs is an error, said in words
    panel.set_machine("gone", MachineView("gone", "running", "ready"))
    wait_idle(qtbot)
    text = panel.empty.text()
    assert text.startswith("Cannot reach the engine of 'gone':"), text
    assert "no engine socket" in text and "Error(" not in text and "Errno" not in text
    panel.shutdown()


def test_detail_pane_follows_the_selection_or_clears(qtbot, gui_home: Path, agent_engine, tmp_path) -> None:
    dc = agent_engine.client()
    a = dc.containers.run(
        "pymachine/busybox", ["sh", "-c", "echo log-of-a; sleep 600"], name="gui-a", detach=True
    )
    b = dc.containers.run(
        "pymachine/busybox", ["sh", "-c", "echo log-of-b; sleep 600"], name="gui-b", detach=True
    )
    try:
        panel = _panel(qtbot, _factory(agent_engine, tmp_path))
        panel.set_machine("m", UP)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.select("gui-a"), timeout=30000)
        panel.tabs.setCurrentWidget(panel.logs)
        qtbot.waitUntil(lambda: "log-of-a" in panel.logs.contents(), timeout=30000)

        panel.select("gui-b")
        assert "log-of-a" not in panel.logs.contents()
        qtbot.waitUntil(lambda: "log-of-b" in panel.logs.contents(), timeout=30000)
        panel.tabs.setCurrentWidget(panel.inspect)
        assert panel.inspect.data["Id"] == b.id

        # another machine: nothing of this one's containers stays on screen, even for a moment
        panel.set_machine("gone", MachineView("gone", "running", "ready"))
        assert panel.rows == [] and panel.inspect.data is None and panel.logs.contents() == ""
        wait_idle(qtbot)
        assert panel.rows == [] and panel.inspect.data is None

        # back; the selected container is removed behind the window's back: the pane never shows its JSON
        panel.set_machine("m", UP)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.select("gui-b"), timeout=30000)
        assert panel.inspect.data["Id"] == b.id
        b.remove(force=True)
        panel.refresh()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: all(r["Id"] != b.id for r in panel.rows), timeout=30000)
        assert panel.inspect.data is None or panel.inspect.data["Id"] == panel.current_id() != b.id
        panel.shutdown()
    finally:
        for c in (a, b):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_stopping_during_the_stop_timeout_and_copied_link(
    qtbot, gui_home: Path, agent_engine, tmp_path
) -> None:
    dc = agent_engine.client()
    # ignores SIGTERM: `stop` waits its whole timeout, then kills
    c = dc.containers.run(
        "pymachine/busybox",
        ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
        name="gui-stubborn",
        ports={"80/tcp": 18099},
        detach=True,
    )
    try:
        panel = _panel(qtbot, _factory(agent_engine, tmp_path))
        notices: list[str] = []
        panel.notice.connect(notices.append)
        panel.set_machine("m", UP)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.select("gui-stubborn"), timeout=30000)

        # this platform has no browser: the URL goes to the clipboard and the window says so
        panel.open_first_port()
        assert QGuiApplication.clipboard().text() == "http://localhost:18099/"
        assert notices == ["Couldn't open a browser — http://localhost:18099/ copied to the clipboard"]

        panel.buttons["stop"].click()
        assert panel.table.cell(c.id, "State") == "Stopping…"
        assert not panel.buttons["stop"].isEnabled() and not panel.buttons["remove"].isEnabled()
        panel.refresh()  # a refresh during the timeout keeps saying it
        qtbot.waitUntil(lambda: not panel._refreshing, timeout=30000)
        assert panel.table.cell(c.id, "State") == "Stopping…"
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.table.cell(c.id, "State") != "Stopping…", timeout=30000)
        c.reload()
        assert c.status == "exited" and panel.table.cell(c.id, "State") == "Exited (137)"
        assert panel.banner.isHidden()
        panel.shutdown()
    finally:
        c.remove(force=True)


def test_cancel_a_pull_that_hangs(qtbot, gui_home: Path, agent_engine) -> None:
    """A 'registry' that accepts the connection and never answers: Cancel gives the window back at once and
    the pull's late failure is not shown."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(server.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    panel = ImagesPanel(engine_factory(agent_engine))
    qtbot.addWidget(panel)
    panel.show()
    panel.set_machine("m", UP)
    wait_idle(qtbot)
    panel.reference.setText(f"127.0.0.1:{port}/hangs/forever:1")
    panel.pull_button.click()
    assert panel.cancel_button.isVisible() and not panel.pull_button.isEnabled()
    qtbot.waitUntil(lambda: bool(held), timeout=30000)  # the engine is waiting on the registry
    panel.cancel_button.click()
    assert panel.pull_button.isEnabled() and panel.progress.isHidden() and panel.status.text() == "Cancelled."
    # the registry goes away: the pull fails on its thread, and that answer is dropped
    for s in (*held, server):
        s.close()
    wait_idle(qtbot, timeout=120000)
    assert panel.banner.isHidden() and panel.status.text() == "Cancelled."
