"""The Apps tab: the apps of the selected machine as the deploy façade records them (state files, git
repositories and releases made by the real `hostvm.deploy` code), their serving containers' states from a real
engine, the URL as a link, the serving release's log, the empty state's exact command, roll back to a chosen
release and remove through the façade's own verbs (no VM boots here: the machine is deleted before the verbs
that would start it, so they fail or finish as they do for a machine that is gone)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from support.gui import captured_urls, engine_factory, wait_idle

from pymachine.app.gui.apps_panel import AppsPanel
from pymachine.app.gui.machine_state import MachineView
from pymachine.hostvm import machines, paths
from pymachine.hostvm.deploy import apps, model
from pymachine.hostvm.deploy.model import LABEL, RELEASE_LABEL, Release

RUNNING = MachineView("gui-apps", "running", "ready")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _released(name: str, image: str, descriptions: list[str]) -> None:
    """Releases recorded as the deploy code records a rolled-out one (App.with_release, model.save)."""
    app = model.load(name)
    for text in descriptions:
        version = app.next_version
        app = app.with_release(
            Release(version, image, {"GREETING": f"v{version}"}, time.time(), text, "a" * 40)
        )
    model.save(app)


def test_apps_tab_lists_opens_logs_rolls_back_and_removes(qtbot, gui_home: Path, agent_engine) -> None:
    dc = agent_engine.client()
    machines.create("gui-apps", cpus=1, memory="512M", driver="qemu")
    machines.create("gui-other", cpus=1, memory="512M", driver="qemu")
    port = _free_port()
    made = apps.create("gui-web", "gui-apps", port)
    assert paths.app("gui-web").repo.is_dir() and made.commands  # a real bare repository with its hook
    apps.create("gui-new", "gui-apps", _free_port())
    apps.create("gui-elsewhere", "gui-other", _free_port())
    image = dc.images.get("pymachine/busybox").id
    _released("gui-web", image, ["push 1a2b3c4", "push 5d6e7f8"])
    serving = dc.containers.run(
        "pymachine/busybox",
        ["sh", "-c", "echo serving-v2-from-gui-web; sleep 600"],
        name="app-gui-web-v2",
        labels={LABEL: "gui-web", RELEASE_LABEL: "2"},
        detach=True,
    )
    try:
        panel = AppsPanel(engine_factory(agent_engine))
        qtbot.addWidget(panel)
        panel.resize(1000, 700)
        panel.show()
        asked: list[str] = []
        panel.confirm = lambda text: asked.append(text) or True  # type: ignore[method-assign]

        # the machine's apps only, with what serves and where
        panel.set_machine("gui-apps", RUNNING)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: len(panel.rows) == 2, timeout=30000)
        assert {r["app"].name for r in panel.rows} == {"gui-web", "gui-new"}
        assert panel.table.cell("gui-web", "Release") == "v2"
        assert panel.table.cell("gui-web", "URL") == f"http://127.0.0.1:{port}/"
        assert panel.table.cell("gui-web", "State") == "running"
        assert panel.table.cell("gui-new", "Release") == "—"
        assert panel.table.cell("gui-new", "State") == "not deployed"
        assert panel.table.cell_links("gui-web", "URL") == [(made.app.url, made.app.url)]

        assert panel.select("gui-new")
        assert not panel.buttons["open"].isEnabled() and not panel.buttons["logs"].isEnabled()
        assert panel.select("gui-web")
        assert [r["label"] for r in panel.releases.rows()] == ["v1", "v2"]
        assert panel.releases.cell("v2", "Serving") == "●" and panel.releases.cell("v1", "Serving") == ""
        with captured_urls() as opened:
            panel.buttons["open"].click()
        assert opened == [f"http://127.0.0.1:{port}/"]

        panel.buttons["logs"].click()  # the serving release's log, from the engine
        qtbot.waitUntil(lambda: "serving-v2-from-gui-web" in panel.logs.contents(), timeout=30000)
        panel.logs.stop()

        # the container stops: the row says so at the next refresh
        serving.stop(timeout=1)
        panel.refresh()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.table.cell("gui-web", "State") == "exited", timeout=30000)

        # roll back to a chosen release: the one serving is said, not redone
        panel.choose_release = lambda app: 2  # type: ignore[method-assign]
        panel.buttons["rollback"].click()
        wait_idle(qtbot)
        assert panel.status.text() == "app 'gui-web' already serves v2", panel.banner.message.text()
        assert not panel.banner.isVisible()

        # v1 on a machine that is gone: the façade's error in words, the app still serving v2 on record
        machines.delete("gui-apps", force=True)
        panel.choose_release = lambda app: 1  # type: ignore[method-assign]
        panel.buttons["rollback"].click()
        wait_idle(qtbot)
        assert panel.banner.isVisible()
        assert "machine 'gui-apps' does not exist" in panel.banner.message.text()
        assert "pymachine create gui-apps" in panel.banner.hint.text()
        assert model.load("gui-web").current == 2 and panel.table.cell("gui-web", "Release") == "v2"

        # remove: one confirmation; the machine is gone, so the façade removes the app's files
        panel.select("gui-web")
        panel.buttons["remove"].click()
        assert asked == ["Remove app 'gui-web': its containers, images, network and git repository?"]
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: [r["app"].name for r in panel.rows] == ["gui-new"], timeout=30000)
        assert not paths.app("gui-web").dir.exists() and panel.status.text() == "Removed gui-web."
        panel.shutdown()
    finally:
        serving.remove(force=True)


def test_apps_tab_empty_state_gives_the_command(qtbot, gui_home: Path, agent_engine) -> None:
    panel = AppsPanel(engine_factory(agent_engine))
    qtbot.addWidget(panel)
    panel.set_machine("dev", MachineView("dev", "stopped", ""))
    assert "not running" in panel.empty.text() or "stopped" in panel.empty.text()
    panel.set_machine("dev", MachineView("dev", "running", "ready"))
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: "pymachine app create" in panel.empty.text(), timeout=30000)
    assert "pymachine app create myapp --machine dev\n" in panel.empty.text()
    panel.shutdown()
