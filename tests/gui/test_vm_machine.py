"""THE ONE GUI TEST THAT BOOTS A REAL VM (vm tier; minutes under TCG on a shared host).

Opt in with PYMACHINE_GUI_VM=1: start from the window with staged progress, the containers view on the
machine's forwarded engine socket (a real container, its port link and log), then stop from the window.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support.gui import wait_idle
from support.machines import unique_name

from pymachine.app.gui.main_window import MainWindow
from pymachine.hostvm import containers, images_io, machines

pytestmark = pytest.mark.vm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(window: MainWindow, name: str) -> str:
    m = window.machines.machine(name)
    return m.state if m else ""


@pytest.mark.skipif(
    os.environ.get("PYMACHINE_GUI_VM") != "1",
    reason="boots a real VM (minutes of CPU under TCG): set PYMACHINE_GUI_VM=1 to run it",
)
def test_start_use_and_stop_a_real_machine_from_the_window(qtbot, gui_home: Path) -> None:
    name = unique_name("gui")
    machines.create(name, cpus=1, memory="768M", driver="qemu")
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    try:
        wait_idle(qtbot)
        window.machines.select(name)
        stages: list[str] = []
        window.machines.progress.valueChanged.connect(
            lambda v: stages.append(window.machines.progress_label.text())
        )
        window.machines.buttons["start"].click()
        assert window.machines.table.cell(name, 1) == "starting"
        sentences: list[str] = []
        window.machines.changed.connect(lambda _v: sentences.append(window.containers.empty.text()))
        qtbot.waitUntil(lambda: name not in window.machines.busy, timeout=900_000)
        assert window.machines.banner.isHidden(), window.machines.banner.message.text()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: _state(window, name) == "running", timeout=30000)
        assert any("guest agent answers" in s for s in stages), stages
        # the Containers tab said which stage the start was in
        assert any(s.startswith(f"{name} is starting — stage ") for s in sentences), sentences
        assert window.machines.progress.isHidden()

        def footer() -> str:
            window.machines.refresh()
            wait_idle(qtbot)
            return window.machines.footer.text()

        # the VM's own cost: its QEMU process's CPU and memory, and its disk image's fill
        qtbot.waitUntil(lambda: "VM CPU" in footer(), timeout=60000)
        assert "memory " in footer() and "of 768 MiB" in footer() and "disk " in footer()

        dc = containers.client(name)
        images_io.ensure_image(dc, "pymachine/busybox")
        port = _free_port()
        dc.containers.run(
            "pymachine/busybox",
            ["sh", "-c", "echo from-the-vm; sleep 600"],
            name="vmweb",
            ports={"80/tcp": port},
            detach=True,
        )
        window.show_tab("containers")
        window.containers.refresh()
        qtbot.waitUntil(lambda: window.containers.select("vmweb"), timeout=60000)
        cid = next(r["Id"] for r in window.containers.rows if r["_summary"]["Names"] == "vmweb")
        assert window.containers.table.cell_links(cid, "Ports") == [
            (f"localhost:{port} → vmweb:80", f"http://localhost:{port}/")
        ]
        window.containers.tabs.setCurrentWidget(window.containers.logs)
        qtbot.waitUntil(lambda: "from-the-vm" in window.containers.logs.contents(), timeout=60000)

        # resource use from the guest's cgroup v2 numbers: a spinning container's CPU % and memory
        spin = dc.containers.run(
            "pymachine/busybox", ["sh", "-c", "while :; do :; done"], name="vmspin", detach=True
        )
        panel = window.containers

        def cpu() -> float:
            panel.refresh()
            wait_idle(qtbot)
            text = panel.table.cell(spin.id, "CPU %")
            return float(text.split()[0]) if text else 0.0

        qtbot.waitUntil(lambda: cpu() > 20.0, timeout=120000)
        assert panel.table.cell(spin.id, "Memory").endswith(("kB", "MB"))
        panel.select("vmspin")
        panel.tabs.setCurrentWidget(panel.stats)
        qtbot.waitUntil(lambda: len(panel.stats.history.points["cpu"]) >= 2, timeout=60000)
        assert max(panel.stats.history.points["cpu"]) > 20.0 and panel.stats.history.points["memory"][-1] > 0
        spin.remove(force=True)
        window.containers.shutdown()

        window.show_tab("machines")
        window.machines.select(name)
        window.machines.buttons["stop"].click()
        # one state everywhere while it stops, and no engine error for the stop the window asked for
        assert window.machines.table.cell(name, 1) == "stopping"
        assert window.containers.empty.text() == f"{name} is stopping…"
        assert window.machine_label.text() == f"machine: {name} (stopping)"
        qtbot.waitUntil(lambda: name not in window.machines.busy, timeout=300_000)
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: _state(window, name) == "stopped", timeout=30000)
        assert "not running" in window.containers.empty.text()
        assert window.machines.banner.isHidden() and window.containers.banner.isHidden()
    finally:
        window.shutdown()
        if machines.exists(name):
            machines.delete(name, force=True)
