"""The main window, settings, tray menu, host-agent events and `pymachine gui --screenshot` (no VM)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QMenu, QSystemTrayIcon
from support.gui import wait_idle

from pymachine.app.cli.main import main as cli_main
from pymachine.app.gui.main_window import MainWindow
from pymachine.app.gui.settings_panel import SettingsPanel, autostart_file, load_settings
from pymachine.app.gui.tray import build_menu
from pymachine.app.gui.workers import EventWatcher
from pymachine.hostvm import paths
from pymachine.hostvm.hostagent.events import EventWriter
from pymachine.hostvm.hostagent.startup import StartupStages
from pymachine.hostvm.progress import StageProgress, stage_from_fields


def test_window_tabs_shortcuts_and_small_size(qtbot, gui_home: Path) -> None:
    window = MainWindow(watch_events=False)
    qtbot.addWidget(window)
    # window shortcuts only fire in the active window; under load activation lands a moment after show()
    with qtbot.waitExposed(window, timeout=30000):
        window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=30000)
    wait_idle(qtbot)
    # offscreen has no system tray: the app runs without one
    assert QSystemTrayIcon.isSystemTrayAvailable() is False and window.tray is None
    for i, name in enumerate(MainWindow.TABS):
        qtbot.keyClick(window, Qt.Key.Key_1 + i, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda i=i: window.tabs.currentIndex() == i, timeout=10000)
        assert window.tabs.currentIndex() == i, name
    # usable small: every tab fits 640x480 (the window's minimum)
    window.resize(640, 480)

    def small() -> None:  # says what it saw if it times out
        got = (window.width(), window.height())
        assert got == (640, 480), (got, window.minimumSizeHint(), window.minimumSize())

    qtbot.waitUntil(small, timeout=30000)
    hint = window.minimumSizeHint()
    assert hint.width() <= 640 and hint.height() <= 480, hint
    # no machine: the other views say what to do
    assert "create one" in window.containers.empty.text()
    assert "create one" in window.images.empty.text()
    window.shutdown()


def test_settings_validate_save_and_start_at_login(qtbot, gui_home: Path) -> None:
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.fields["memory"].setText("12 potatoes")
    panel.fields["cpus"].setText("1")
    assert panel.save() is False
    assert "is not a size" in panel.errors["memory"].text() and not panel.errors["memory"].isHidden()
    assert not paths.settings_file().exists()

    panel.fields["memory"].setText("768M")
    panel.start_at_login.setChecked(True)
    assert panel.save() is True
    saved = json.loads(paths.settings_file().read_text())
    assert saved == {"defaults": {"cpus": "1", "memory": "768M"}, "start_at_login": True}
    entry = autostart_file().read_text()
    assert "[Desktop Entry]" in entry and "pymachine.app.gui.main" in entry
    assert autostart_file().parent.parent.name == "xdg-config"  # the test's own XDG_CONFIG_HOME

    panel.start_at_login.setChecked(False)
    assert panel.save() is True
    assert not autostart_file().exists()
    assert load_settings()["defaults"]["memory"] == "768M"


def test_create_dialog_starts_from_saved_defaults(qtbot, gui_home: Path) -> None:
    paths.ensure_home()
    paths.settings_file().write_text(json.dumps({"defaults": {"memory": "768M", "disk": "9G"}}))
    window = MainWindow(watch_events=False)
    qtbot.addWidget(window)
    wait_idle(qtbot)
    dialog = window.machines.open_create()
    qtbot.addWidget(dialog)
    assert dialog.edits["memory"].text() == "768M" and dialog.edits["disk"].text() == "9G"
    window.shutdown()


def test_tray_menu_quick_start_stop() -> None:
    calls: list[tuple[str, str]] = []
    menu = QMenu()
    rows = [SimpleNamespace(name="dev", state="running"), SimpleNamespace(name="ci", state="stopped")]
    build_menu(menu, rows, lambda verb, name: calls.append((verb, name)), lambda: None, lambda: None)
    subs = {a.text(): a.menu() for a in menu.actions() if a.menu()}
    assert set(subs) == {"dev — running", "ci — stopped"}
    dev = {a.text(): a for a in subs["dev — running"].actions()}
    ci = {a.text(): a for a in subs["ci — stopped"].actions()}
    assert not dev["Start"].isEnabled() and dev["Stop"].isEnabled()
    assert ci["Start"].isEnabled() and not ci["Stop"].isEnabled()
    dev["Stop"].trigger()
    ci["Start"].trigger()
    assert calls == [("stop", "dev"), ("start", "ci")]


def test_host_agent_events_reach_the_window(qtbot, gui_home: Path) -> None:
    mp = paths.machine("evm")
    mp.dir.mkdir(parents=True)
    writer = EventWriter(mp.events)
    writer.emit("state", state="starting")  # before the watcher: not replayed
    watcher = EventWatcher(poll=0.05)
    got: list[tuple[str, str, dict]] = []
    watcher.event.connect(lambda name, ev: got.append((name, ev.type, ev.fields)))
    watcher.start()
    try:
        qtbot.waitUntil(lambda: "evm" in watcher._offsets, timeout=10000)
        StartupStages(writer.emit).begin("ssh link")  # what the host agent writes at its start
        writer.emit(
            "forward", action="opened", proto="tcp", host_ip="127.0.0.1", host_port=8080, guest_port=80
        )
        qtbot.waitUntil(lambda: len(got) == 2, timeout=10000)
    finally:
        watcher.stop()
    assert got[0][:2] == ("evm", "stage")
    assert stage_from_fields(got[0][2]) == StageProgress(2, 3, "ssh link", "running", None, "host agent")
    assert got[1][1] == "forward" and got[1][2]["host_port"] == 8080

    # the window's own watcher: a forward that failed shows in the status bar
    window = MainWindow()
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(
            lambda: window.watcher is not None and "evm" in window.watcher._offsets, timeout=10000
        )
        writer.emit(
            "forward",
            action="failed",
            proto="tcp",
            host_port=8081,
            guest_port=80,
            container="web",
            error="address in use",
        )
        qtbot.waitUntil(lambda: "8081" in window.statusBar().currentMessage(), timeout=10000)
        assert (
            window.statusBar().currentMessage() == "evm: port localhost:8081 → web:80 failed: address in use"
        )
    finally:
        window.shutdown()


def test_screenshot_command_renders_every_view(qtbot, gui_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "shots"
    assert cli_main(["gui", "--screenshot", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "apps.png",
        "containers.png",
        "create-dialog.png",
        "images.png",
        "machines.png",
        "settings.png",
        "volumes.png",
    ]
    for name in ("machines", "containers", "images", "volumes", "settings"):
        img = QImage(str(out / f"{name}.png"))
        assert (img.width(), img.height()) == (1280, 800), name
        # not blank: a rendered view has many colours (text, borders, buttons)
        colours = {img.pixel(x, y) for x in range(0, 1280, 16) for y in range(0, 800, 16)}
        assert len(colours) > 4, name


def test_gui_main_opens_the_window_and_quits(qtbot, gui_home: Path) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from pymachine.app.gui.main import main as gui_main

    app = QApplication.instance()
    seen: list[str] = []

    def look_and_quit() -> None:
        seen.extend(w.windowTitle() for w in app.topLevelWidgets() if w.isVisible())
        app.quit()

    QTimer.singleShot(1500, look_and_quit)
    assert gui_main([]) == 0
    assert "pymachine" in seen
