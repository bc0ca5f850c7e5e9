"""One real guest agent for the whole compat session, started on this host, with the busybox image loaded.

Set PYMACHINE_COMPAT_DOCKER_HOST=unix:///path/to/forwarded.sock to run the same suite against a VM's
host-forwarded engine socket instead (the vm-tier run of issue 6).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, RemoteAgent, start_agent


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    remote = os.environ.get("PYMACHINE_COMPAT_DOCKER_HOST")
    if remote:
        a: Agent = RemoteAgent.connect(remote, Path(tmp_path_factory.mktemp("remote")))
    else:
        a = start_agent(Path(tmp_path_factory.mktemp("agent")))
    try:
        a.load_busybox()
        yield a
    finally:
        a.stop()
