"""Resource use: Docker's stats arithmetic on samples (pure), then a real busy container on a real engine
shows its CPU % and memory in the table and draws its charts in the Stats tab from the stats stream."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage
from support.gui import engine_factory, wait_idle

from pymachine.app.gui.containers_panel import ContainersPanel
from pymachine.app.gui.machine_state import MachineView
from pymachine.app.gui.stats import StatsHistory, StatsSample, cpu_percent, rate


def _raw(read: str, cpu: int, system: int, usage: int, cache: int, rx: int, wbytes: int) -> dict:
    return {
        "read": read,
        "cpu_stats": {"cpu_usage": {"total_usage": cpu}, "system_cpu_usage": system, "online_cpus": 2},
        "memory_stats": {"usage": usage, "limit": 1 << 30, "stats": {"inactive_file": cache}},
        "networks": {"eth0": {"rx_bytes": rx, "tx_bytes": 10}},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 254, "minor": 0, "op": "read", "value": 0},
                {"major": 254, "minor": 0, "op": "write", "value": wbytes},
            ]
        },
        "pids_stats": {"current": 3},
    }


def test_docker_stats_arithmetic() -> None:
    a = StatsSample.from_docker(_raw("2026-12-05T13:00:00Z", 10**9, 10**10, 50 << 20, 10 << 20, 0, 0))
    # 1 s of CPU in 2 s of wall time; the guest's /proc/stat lost ticks (as a TCG guest under load does)
    b = StatsSample.from_docker(
        _raw("2026-12-05T13:00:02Z", 2 * 10**9, 10**10 + 10**9, 60 << 20, 10 << 20, 4096, 8192)
    )
    assert a.mem_usage == 40 << 20  # page cache left out, as `docker stats` does
    assert cpu_percent(None, b) is None
    assert cpu_percent(a, b) == 50.0  # half a CPU, not Docker's 1/1 x 2 CPUs = 200 % from the lost ticks
    assert cpu_percent(b, a) is None  # counters went back (a restart): no number rather than a wrong one
    unstamped = [
        StatsSample.from_docker(_raw("", cpu, sys_, 0, 0, 0, 0)) for cpu, sys_ in ((0, 0), (500, 2000))
    ]
    assert cpu_percent(*unstamped) == 100.0 * 500 / 2000 * 2  # no stamps: Docker's formula
    assert rate(a, b, "net_rx") == 2048.0 and rate(a, b, "blk_write") == 4096.0
    h = StatsHistory(size=4)
    for i in range(6):
        h.add(_raw(f"2026-12-05T13:00:0{i}Z", 1000 * i, 10_000 * i, 1 << 20, 0, 100 * i, 0))
    assert len(h.points["memory"]) == 4 and len(h.points["cpu"]) == 4  # the window keeps the last N
    assert list(h.points["net_rx"]) == [100.0] * 4
    # a stopped container's sample (the agent sends no cgroup numbers) parses to zeros, not an error
    empty = StatsSample.from_docker({"read": "2026-12-05T13:00:00Z", "id": "x", "name": "/x"})
    assert (empty.mem_usage, empty.cpu_total, empty.net_rx) == (0, 0, 0)


def test_stats_tab_and_columns_on_this_hosts_engine(
    qtbot, gui_home: Path, agent_engine, tmp_path: Path
) -> None:
    """This host's test engine runs on cgroup v1, where the guest agent has no CPU or memory numbers (the VM
    has cgroup v2: test_vm_machine checks the numbers there). The window says nothing rather than "0.0 %",
    and the Stats tab still draws what the stream has (network)."""
    dc = agent_engine.client()
    busy = dc.containers.run(
        "pymachine/busybox", ["sh", "-c", "while :; do :; done"], name="gui-busy", detach=True
    )
    try:
        panel = ContainersPanel(engine_factory(agent_engine))
        qtbot.addWidget(panel)
        panel.resize(1100, 760)
        panel.show()
        panel.set_machine("m", MachineView("m", "running", "ready"))
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.select("gui-busy"), timeout=30000)
        for _ in range(2):  # two samples: enough for a CPU % where the engine measures one
            panel.refresh()
            wait_idle(qtbot)
        row = next(r for r in panel.rows if r["Id"] == busy.id)
        assert row["_stats"].measured is False
        assert panel.table.cell(busy.id, "CPU %") == "" and panel.table.cell(busy.id, "Memory") == ""

        panel.tabs.setCurrentWidget(panel.stats)
        qtbot.waitUntil(lambda: len(panel.stats.history.points["net_rx"]) >= 2, timeout=60000)
        assert panel.stats.container_id == busy.id and panel.stats.samples >= 3
        assert panel.stats.charts["network"].caption().startswith("Network: in ")
        assert not panel.stats.history.points["cpu"]  # nothing made up
        shot = panel.stats.grab().toImage()
        out = tmp_path / "stats.png"
        assert shot.save(str(out)) and QImage(str(out)).width() == shot.width()

        # the container goes away: the charts are cleared, nothing of gui-busy stays on screen
        busy.remove(force=True)
        panel.refresh()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: panel.stats.container_id != busy.id, timeout=30000)
        panel.shutdown()
    finally:
        try:
            busy.remove(force=True)
        except Exception:  # noqa: BLE001 - removed above
            pass
