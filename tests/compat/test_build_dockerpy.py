"""docker-py `images.build` (and the low-level `api.build`) against our agent."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import docker
import pytest
from support.agent import BUSYBOX_REF, Agent
from support.build import build_agent, write_context  # noqa: F401 - build_agent is a fixture

BB = BUSYBOX_REF


def test_images_build_path_buildargs_and_cache(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {BB} AS base\nARG GREETING=hi\nRUN echo $GREETING > /g\n"
            "FROM base\nCOPY app.txt /app.txt\nCMD cat /g /app.txt\n",
            "app.txt": "app\n",
            ".dockerignore": "*.secret\n",
            "x.secret": "s",
        },
    )
    client = build_agent.client()
    image, logs = client.images.build(path=str(ctx), tag="py-build:1", buildargs={"GREETING": "hello"})
    lines = "".join(chunk.get("stream", "") for chunk in logs)
    assert f"Step 1/6 : FROM {BB} AS base" in lines and "Successfully tagged py-build:1" in lines
    assert image.id == client.images.get("py-build:1").id and "py-build:1" in image.tags
    assert image.attrs["Config"]["Cmd"] == ["/bin/sh", "-c", "cat /g /app.txt"]
    assert client.containers.run("py-build:1", remove=True) == b"hello\napp\n"
    out = client.containers.run("py-build:1", "ls /", remove=True).decode()
    assert "x.secret" not in out

    again, logs = client.images.build(path=str(ctx), tag="py-build:1", buildargs={"GREETING": "hello"})
    text = "".join(chunk.get("stream", "") for chunk in logs)
    assert again.id == image.id and text.count("Using cache") == 4
    changed, _ = client.images.build(path=str(ctx), tag="py-build:1", buildargs={"GREETING": "bye"})
    assert changed.id != image.id
    assert client.containers.run("py-build:1", remove=True) == b"bye\napp\n"


def test_images_build_fileobj_target_and_labels(build_agent: Agent) -> None:  # noqa: F811
    client = build_agent.client()
    dockerfile = f"FROM {BB} AS one\nRUN touch /one\nFROM one AS two\nRUN touch /two\n"
    image, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag="py-target", target="one", labels={"team": "build"}
    )
    assert image.labels["team"] == "build"
    assert client.containers.run("py-target", "ls /one", remove=True) == b"/one\n"
    with pytest.raises(docker.errors.ContainerError):
        client.containers.run("py-target", "ls /two", remove=True)


def test_failed_build_raises_build_error_with_the_output(build_agent: Agent) -> None:  # noqa: F811
    client = build_agent.client()
    dockerfile = f"FROM {BB}\nRUN echo step-output && false\n"
    with pytest.raises(docker.errors.BuildError) as info:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="py-fail")
    assert "returned a non-zero code: 1" in str(info.value)
    assert any("step-output" in chunk.get("stream", "") for chunk in info.value.build_log)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("py-fail")


def test_low_level_api_custom_context_decoded_stream(build_agent: Agent) -> None:  # noqa: F811
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"Dockerfile": f"FROM {BB}\nCOPY f /f\n", "f": "payload"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()))
    buf.seek(0)
    api = build_agent.client().api
    chunks = list(api.build(fileobj=buf, custom_context=True, encoding="gzip", tag="py-raw", decode=True))
    assert any("aux" in c for c in chunks)
    assert chunks[-1] == {"stream": "Successfully tagged py-raw:latest\n"}
