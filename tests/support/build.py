"""Helpers for the build tests: a module-wide agent with busybox loaded, context folders and tars, and the
JSON stream of a raw `POST /build`."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agent import Agent, running_agent


@pytest.fixture(scope="module")
def build_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One real agent for a whole test module (starting one per test would dominate the run time)."""
    with running_agent(tmp_path_factory.mktemp("buildagent")) as agent:
        agent.load_busybox()
        yield agent


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create a context folder; a name ending in .sh is made executable."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        if name.endswith(".sh"):
            os.chmod(path, 0o755)
    return root


def context_tar(files: dict[str, str | bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """An uncompressed context tar as the CLI sends it (uid/gid 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(raw))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def post_build(agent: Agent, body: bytes, query: str = "", timeout: float = 300) -> list[dict]:
    """POST /build with a tar body; returns the decoded JSON-stream messages."""
    status, headers, raw = agent.request(
        "POST",
        "/v1.44/build?" + query,
        body=body,
        headers={"Content-Type": "application/x-tar"},
        timeout=timeout,
    )
    assert status == 200, raw
    assert headers.get("content-type", "").startswith("application/json")
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def stream_text(messages: list[dict]) -> str:
    return "".join(m.get("stream", "") for m in messages)


def errors(messages: list[dict]) -> list[dict]:
    return [m for m in messages if "error" in m or "errorDetail" in m]
