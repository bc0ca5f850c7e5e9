"""Desktop notifications: a machine verb that ends while the window is not in front posts one through the
platform's notification service — here a private D-Bus session bus with a freedesktop Notifications server on
it, reached by the app's real `gdbus` call — and nothing while the window is focused. The verbs are real: a
start that fails in its first stage (the machine's kernel is gone) and a stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gui import wait_idle

from pymachine.hostvm import machines, paths

pytest.importorskip("PySide6.QtDBus")  # the notification daemon (support/notify_server.py) uses it

from pymachine.app.gui.main_window import MainWindow  # noqa: E402
from pymachine.app.gui.notify import Note, Notifier, desktop_command  # noqa: E402

SERVER = Path(__file__).parent.parent / "support" / "notify_server.py"


class NotificationServer:
    """What the notification daemon (support/notify_server.py, a process of its own) was sent, in order."""

    def __init__(self, record: Path) -> None:
        self.record = record

    @property
    def got(self) -> list[tuple[str, str, str, dict[str, Any], int]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [
            tuple(json.loads(line)) for line in lines if line.endswith("]")
        ]  # a line being written: later


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NotificationServer]:
    if not shutil.which("dbus-daemon") or not shutil.which("gdbus"):
        pytest.skip("needs dbus-daemon and gdbus (apt-get install dbus libglib2.0-bin)")
    out = subprocess.run(
        [
            "dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1", "--nopidfile",
            f"--address=unix:path={tmp_path}/bus",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    address, pid = out.stdout.split()[0], int(out.stdout.split()[1])
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)  # what the app's gdbus call connects to
    record = tmp_path / "notifications.jsonl"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    server = subprocess.Popen(
        [sys.executable, str(SERVER), address, str(record)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", "the notification daemon did not take its name"
        yield NotificationServer(record)
    finally:
        server.kill()
        server.wait(timeout=30)
        os.kill(pid, signal.SIGTERM)


def _broken_machine(home: Path, name: str) -> None:
    """A machine whose start fails in its first stage, before any VM boots: its kernel is gone."""
    machines.create(name, cpus=1, memory="512M", driver="qemu")
    cfg_path = paths.machine(name).config
    cfg = json.loads(cfg_path.read_text())
    cfg["image"]["kernel"] = str(home / "gone" / "vmlinuz")
    cfg_path.write_text(json.dumps(cfg))


def test_a_failed_start_notifies_when_the_window_is_not_in_front(
    qtbot, gui_home: Path, session_bus: NotificationServer
) -> None:
    _broken_machine(gui_home, "gui-n")
    window = MainWindow(watch_events=False, tray=False)
    qtbot.addWidget(window)
    with qtbot.waitExposed(window):
        window.show()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: "gui-n" in [m.name for m in window.machines.rows], timeout=30000)

    # in front and focused: the banner says it, no notification
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=30000)
    window.machines.run_verb("start", "gui-n")
    qtbot.waitUntil(lambda: window.machines.banner.isVisible(), timeout=60000)
    wait_idle(qtbot)
    assert [n.title for n in window.notifier.skipped] == ["Couldn't start gui-n"]
    assert window.notifier.sent == [] and session_bus.got == []

    # hidden (closed to the tray, or another window in front): the desktop's notification service says it
    window.hide()
    window.machines.run_verb("start", "gui-n")
    qtbot.waitUntil(lambda: len(session_bus.got) == 1, timeout=60000)
    app, summary, body, hints, timeout = session_bus.got[0]
    assert (app, summary) == ("pymachine", "Couldn't start gui-n")
    assert "base image" in body and "recreate the machine" in body  # message and hint, in words
    assert "Error" not in body and "Traceback" not in body
    assert hints["urgency"] == 2 and timeout == 8000  # a failure is critical
    assert window.notifier.failed == []

    # a stop that ends: said too
    window.machines.run_verb("stop", "gui-n")
    qtbot.waitUntil(lambda: len(session_bus.got) == 2, timeout=60000)
    assert session_bus.got[1][1:3] == (
        "gui-n stopped",
        "Its containers stopped with it; start it again from the window or the tray.",
    )
    assert session_bus.got[1][3]["urgency"] == 1
    wait_idle(qtbot)
    window.shutdown()


def test_text_reaches_the_service_as_written(qtbot, gui_home: Path, session_bus: NotificationServer) -> None:
    """gdbus parses its arguments as GVariant text: quotes, brackets and new lines must arrive unchanged."""
    from PySide6.QtWidgets import QWidget

    window = QWidget()
    qtbot.addWidget(window)
    notifier = Notifier(window, None)
    tricky = Note("it's [1] {x}", "line one\nsaid \"hi\" \\ 'there' <b>", True)
    assert notifier.post(tricky) == "desktop"
    qtbot.waitUntil(lambda: len(session_bus.got) == 1, timeout=30000)
    assert session_bus.got[0][1:3] == (tricky.title, tricky.body)


def test_no_notification_service_is_not_an_error(qtbot, gui_home: Path, monkeypatch) -> None:
    """A desktop without the service (here: a bus address that leads nowhere): the window carries on, the
    refusal is kept, not raised."""
    from PySide6.QtWidgets import QWidget

    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={gui_home}/no-bus")
    window = QWidget()
    qtbot.addWidget(window)
    notifier = Notifier(window, None)
    assert notifier.post(Note("t", "b")) == "desktop"
    qtbot.waitUntil(lambda: len(notifier.failed) == 1, timeout=30000)
    assert desktop_command(Note("t", "b"), "win32") is None  # Windows: the tray, which it always has
