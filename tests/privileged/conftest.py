"""Fixtures the runtime tests of this tier share: the busybox rootfs layer and a Runtime on a fresh state
folder that removes what a test left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.rootfs import build_busybox_rootfs

from pymachine_agent.runtime import Runtime


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("busybox"))


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(tmp_path / "state")
    yield runtime
    for c in runtime.list():
        runtime.remove(c.id, force=True)
    runtime.close()
