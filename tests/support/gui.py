"""Helpers for the GUI tier: an isolated home, a real guest agent on this host with the builtin busybox image
loaded (the containers/images views talk to it instead of a VM), and waiting for worker threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, start_agent


def wait_idle(qtbot: Any, timeout: int = 60000) -> None:
    """Until every background task of the app has run and delivered its result on the GUI thread."""
    from pymachine.app.gui import workers

    qtbot.waitUntil(lambda: not workers.busy(), timeout=timeout)


@pytest.fixture
def gui_home(pymachine_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PYMACHINE_HOME plus a private XDG config folder (start-at-login writes there)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return pymachine_home


@pytest.fixture(scope="module")
def agent_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """A real guest agent on this host (root: namespaces, overlayfs), with pymachine/busybox loaded."""
    import os
    import sys

    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the agent-backed GUI tests need root on Linux (the guest agent makes namespaces)")
    from pymachine.hostvm import images_io
    from pymachine.hostvm.container_images import ensure_container_image

    agent = start_agent(tmp_path_factory.mktemp("gui-agent"))
    try:
        dc = agent.client()
        images_io.load(dc, str(ensure_container_image("pymachine/busybox")))
        yield agent
    finally:
        agent.stop()


def engine_factory(agent: Agent) -> Any:
    """A client factory for the panels: every machine name maps to the test agent's engine."""
    import docker

    from pymachine.hostvm.containers import API_VERSION

    def factory(_machine: str) -> Any:
        return docker.DockerClient(base_url=agent.url, version=API_VERSION, timeout=120)

    return factory


@contextlib.contextmanager
def captured_urls() -> Iterator[list[str]]:
    """URLs QDesktopServices.openUrl was asked to open (http/https), instead of starting a browser."""
    from PySide6.QtCore import QObject, QUrl, Slot
    from PySide6.QtGui import QDesktopServices

    opened: list[str] = []

    class Catcher(QObject):
        @Slot(QUrl)
        def open(self, url: QUrl) -> None:
            opened.append(url.toString())

    catcher = Catcher()
    for scheme in ("http", "https"):
        QDesktopServices.setUrlHandler(scheme, catcher, "open")
    try:
        yield opened
    finally:
        for scheme in ("http", "https"):
            QDesktopServices.unsetUrlHandler(scheme)
