"""Pure logic of the window (offscreen, no engine): the keyed table model keeps rows and selection across
refreshes, the proxy sorts by value and searches every column, image names and dates read well, one machine
state from the façade's typed values, and connection failures in words rather than exception reprs."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import paramiko
import pytest
import requests
import urllib3
from PySide6.QtCore import Qt

from pymachine.app.gui.common import describe
from pymachine.app.gui.containers_panel import short_image
from pymachine.app.gui.images_panel import created
from pymachine.app.gui.machine_state import machine_view
from pymachine.app.gui.table_model import Column, DataTable
from pymachine.hostvm import machines, status
from pymachine.hostvm.errors import PymachineError
from pymachine.hostvm.progress import StageProgress
from pymachine.hostvm.reasons import plain_reason

COLUMNS = (
    Column("Name", lambda r: r["name"]),
    Column("Size", lambda r: f"{r['size']} B", lambda r: r["size"]),
)


def _rows(*pairs: tuple[str, int]) -> list[dict[str, object]]:
    return [{"name": n, "size": s} for n, s in pairs]


def test_rows_and_selection_survive_refreshes(qtbot) -> None:
    table = DataTable(COLUMNS, lambda r: r["name"])
    qtbot.addWidget(table)
    table.resize(400, 300)
    table.show()
    table.set_rows(_rows(("web", 10), ("db", 2000), ("cache", 300)))
    assert table.visible_keys() == ["cache", "db", "web"]  # sorted by name
    assert table.select_key("db")
    widths = [table.view.horizontalHeader().sectionSize(i) for i in range(2)]
    resets: list[object] = []
    table.model.modelReset.connect(lambda: resets.append(1))
    changed: list[str] = []
    table.current_changed.connect(changed.append)

    # a refresh: web changes, cache goes, api arrives; db stays selected, nothing is rebuilt or resized
    table.set_rows(_rows(("api", 5), ("web", 11), ("db", 2000)))
    assert table.current_key() == "db" and changed == []
    assert table.cell("web", 1) == "11 B"
    assert table.visible_keys() == ["api", "db", "web"]
    assert not resets
    assert [table.view.horizontalHeader().sectionSize(i) for i in range(2)] == widths

    # sorting by size sorts numbers, not text ("2000 B" < "5 B" as text)
    table.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert table.visible_keys() == ["api", "web", "db"]
    assert table.current_key() == "db"

    # the search box filters every column, case-insensitively
    table.search.setText("W")
    assert table.visible_keys() == ["web"]
    assert table.current_key() in ("", "web")  # never a row the search hides
    table.search.setText("2000")
    assert table.visible_keys() == ["db"]
    table.search.clear()
    assert table.select_key("db")

    # the selected row goes away: the selection clears (or moves to the row Qt picks) and listeners hear it
    table.set_rows(_rows(("api", 5)))
    assert table.current_key() in ("", "api") and changed[-1] == table.current_key()
    table.set_rows([])
    assert table.current_key() == "" and changed[-1] == ""


def test_short_image_names_and_dates() -> None:
    assert short_image("docker.io/library/nginx:1.27") == "nginx:1.27"
    assert short_image("pymachine/busybox") == "pymachine/busybox"
    digest = "sha256:" + "ab" * 32
    assert short_image(digest) == "abababababab"
    assert short_image(f"localhost:5000/app@{digest}") == "localhost:5000/app@sha256:abababababab"
    assert created("0001-01-01T00:00:00Z") == "—"
    assert created("2026-12-05T13:30:00.123Z") == "2026-12-05 13:30:00"


def test_one_state_from_the_facade(gui_home: Path) -> None:
    """The façade's real MachineStatus of a real (stopped) machine, with this window's verbs on it."""
    machines.create("gui-state", cpus=1, memory="512M", driver="qemu")
    try:
        st = status.machine_status(machines.get("gui-state"), repair=False)
        idle = machine_view(st)
        assert (idle.state, idle.engine, idle.engine_usable, idle.dot) == ("stopped", "", False, "off")
        assert "not running" in idle.sentence()

        stage = StageProgress(2, 5, "ssh banner", "running")
        starting = machine_view(st, "start", stage)
        assert starting.state == "starting" and starting.dot == "busy" and not starting.engine_usable
        assert starting.sentence() == "gui-state is starting — stage 2 of 5: ssh banner"
        # a host agent's own stage does not pose as the start's
        assert machine_view(st, "start", StageProgress(1, 3, "ssh link", source="host agent")).sentence() == (
            "gui-state is starting…"
        )
        stopping = machine_view(st, "stop", stage)
        assert stopping.state == "stopping" and stopping.stage is None
        assert stopping.sentence() == "gui-state is stopping…"
    finally:
        machines.delete("gui-state", force=True)


def test_running_machine_views(gui_home: Path) -> None:
    machines.create("gui-run", cpus=1, memory="512M", driver="qemu")
    try:
        m = machines.get("gui-run")
        from dataclasses import replace

        up = replace(m, state="running")
        ready = {"running": True, "state": "ready", "link": {"state": "up"}, "forwards": []}
        v = machine_view(status.MachineStatus.of(up, ready))
        assert (v.state, v.engine, v.engine_usable, v.dot) == ("running", "ready", True, "ok")
        down = {"running": False, "state": "error", "error": "Connection refused", "forwards": []}
        v = machine_view(status.MachineStatus.of(up, down))
        assert v.engine == "down: Connection refused" and v.dot == "bad"
        # the same answer while this window stops the machine: no error anywhere
        v = machine_view(status.MachineStatus.of(up, down), "stop")
        assert (v.state, v.engine, v.engine_usable) == ("stopping", "", False)
    finally:
        machines.delete("gui-run", force=True)


def test_connection_failures_in_words() -> None:
    # what docker-py raised when the machine's sshd could not open the engine socket
    channel = paramiko.ChannelException(2, "Connect failed")
    wrapped = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", channel)
    )
    assert "ChannelException" not in plain_reason(wrapped)
    assert (
        plain_reason(wrapped)
        == "the machine refused the connection to its engine (is the guest agent running?)"
    )
    gai = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert "Errno" not in plain_reason(requests.exceptions.ConnectionError(gai))
    assert "could not be resolved" in plain_reason(requests.exceptions.ConnectionError(gai))
    assert (
        plain_reason(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == "connection refused"
    )
    assert describe(PymachineError("no such image", hint="pull it first")) == (
        "no such image",
        "pull it first",
    )
    assert describe(ValueError("odd value")) == ("odd value", "")


@pytest.mark.parametrize("exc", [RuntimeError(), KeyError("x")])
def test_describe_never_empty(exc: BaseException) -> None:
    message, _hint = describe(exc)
    assert message and "Error(" not in message


def test_machine_footer_reads_the_vm_process_and_disk(qtbot, gui_home: Path) -> None:
    """The footer's numbers from real files: a real machine's disk image, and a real process's /proc entry
    (this test's own process stands where the VM's QEMU would be)."""
    import os
    from dataclasses import replace

    from support.gui import wait_idle

    from pymachine.app.gui.machines_panel import MachinesPanel
    from pymachine.app.gui.vm_usage import cpu_percent, footer_text, sample

    machines.create("gui-foot", cpus=1, memory="512M", driver="qemu")
    try:
        panel = MachinesPanel()
        qtbot.addWidget(panel)
        wait_idle(qtbot)
        assert panel.select("gui-foot")
        text = panel.footer.text()
        assert text.startswith("gui-foot (stopped) · disk ") and text.endswith("of 8 GiB (0 %)"), text
        assert "VM CPU" not in text  # no process: nothing made up

        me = replace(machines.get("gui-foot"), state="running", pid=os.getpid())
        first = sample(me)
        second = first
        while second.cpu_ticks is not None and second.cpu_ticks < (first.cpu_ticks or 0) + 10:
            second = sample(me)  # burn CPU until /proc counts 10 more ticks (how long depends on the load)
        assert first.rss and first.rss > 10 << 20
        cpu = cpu_percent(first, second)
        assert cpu is not None and cpu > 0.0
        line = footer_text("gui-foot", "running", first, second)
        assert "VM CPU" in line and "memory" in line and "of 512 MiB" in line
        assert cpu_percent(second, first) is None  # clock backwards: no number
    finally:
        machines.delete("gui-foot", force=True)
