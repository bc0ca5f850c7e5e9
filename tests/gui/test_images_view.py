"""Images view against a real guest agent on this host: sizes, pull from a loopback registry with a progress
bar, loading the builtin image, build from a folder with its output, remove."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.gui import engine_factory, wait_idle
from support.registry import busybox_layer, docker_archive, file, local_registry, tar_bytes

from pymachine.app.gui.images_panel import ImagesPanel


@pytest.fixture
def panel(qtbot, gui_home: Path, agent_engine) -> ImagesPanel:
    p = ImagesPanel(engine_factory(agent_engine))
    qtbot.addWidget(p)
    p.resize(1280, 800)
    p.show()
    p.confirm = lambda _text: True  # type: ignore[method-assign]
    p.set_machine("m", True)
    wait_idle(qtbot)
    return p


def _repos(panel: ImagesPanel) -> list[str]:
    return [f"{r['Repository']}:{r['Tag']}" for r in panel.rows]


def test_list_remove_and_load_builtin(qtbot, panel: ImagesPanel, agent_engine) -> None:
    assert "pymachine/busybox:latest" in _repos(panel)
    row = next(r for r in panel.rows if f"{r['Repository']}:{r['Tag']}" == "pymachine/busybox:latest")
    size = panel.table.cell(f"{row['ID']}|{row['Repository']}|{row['Tag']}", 3)
    assert size.endswith(("kB", "MB")) and float(size[:-2]) > 0

    assert panel.select("pymachine/busybox")
    panel.remove_button.click()
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: "pymachine/busybox:latest" not in _repos(panel), timeout=30000)
    assert not agent_engine.client().images.list(name="pymachine/busybox")

    messages: list[str] = []
    panel.reference.setText("pymachine/busybox")
    panel.pull_button.click()
    assert not panel.progress.isHidden()
    while panel.working:
        qtbot.wait(50)
        if panel.status.text() not in messages:
            messages.append(panel.status.text())
    wait_idle(qtbot)
    qtbot.waitUntil(lambda: "pymachine/busybox:latest" in _repos(panel), timeout=30000)
    assert any("loading pymachine/busybox" in m or "Pulled" in m for m in messages)
    assert panel.banner.isHidden()


def test_pull_from_a_loopback_registry_fills_the_bar(
    qtbot, panel: ImagesPanel, agent_engine, tmp_path
) -> None:
    with local_registry(tmp_path / "reg") as reg:
        ref = f"{reg.host}/gui/bb:1"
        # a layer this engine has never seen, so the pull really downloads it
        noise = tar_bytes([file("noise.bin", os.urandom(3_000_000))])
        agent_engine.client().images.load(docker_archive([busybox_layer(), noise], [ref]))
        agent_engine.docker("push", ref)
        agent_engine.docker("rmi", ref)
        values: list[int] = []
        panel.progress.valueChanged.connect(values.append)
        panel.reference.setText(ref)
        panel.pull_button.click()
        wait_idle(qtbot)
        qtbot.waitUntil(lambda: ref in _repos(panel), timeout=60000)
    assert panel.banner.isHidden(), panel.banner.message.text()
    assert values and max(values) == 100 and any(0 < v < 100 for v in values)
    assert f"Pulled {ref}" in panel.status.text()


def test_pull_failure_shows_the_reason(qtbot, panel: ImagesPanel, tmp_path) -> None:
    with local_registry(tmp_path / "reg") as reg:
        panel.reference.setText(f"{reg.host}/gui/missing:1")
        panel.pull_button.click()
        wait_idle(qtbot)
    assert not panel.banner.isHidden()
    assert "missing" in panel.banner.message.text()
    assert panel.pull_button.isEnabled()


def test_build_from_a_folder_shows_output(qtbot, panel: ImagesPanel, agent_engine, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greeting.txt").write_text("built by the gui test\n")
    (ctx / "Dockerfile").write_text(
        "FROM pymachine/busybox\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt > /copy.txt\n"
    )
    panel.tag.setText("gui-built:1")
    panel.build(str(ctx))
    wait_idle(qtbot, timeout=300000)
    qtbot.waitUntil(lambda: "gui-built:1" in _repos(panel), timeout=30000)
    out = panel.output.toPlainText()
    assert "COPY greeting.txt /greeting.txt" in out and "RUN cat /greeting.txt" in out
    ran = agent_engine.docker("run", "--rm", "gui-built:1", "cat", "/copy.txt")
    assert ran.stdout == "built by the gui test\n"
    assert panel.banner.isHidden(), panel.banner.message.text()

    (ctx / "Dockerfile").write_text("FROM pymachine/busybox\nRUN exit 7\n")
    panel.build(str(ctx))
    wait_idle(qtbot, timeout=300000)
    assert not panel.banner.isHidden()
    assert "build failed" in panel.banner.message.text()
    # what it made goes: the failed RUN's container (kept, as docker's builder keeps it without --force-rm)
    # held pymachine/busybox, so the remove test failed whenever it ran after this one
    dc = agent_engine.client()
    for c in dc.containers.list(all=True, filters={"status": "exited"}):
        c.remove()
    dc.images.remove("gui-built:1")
