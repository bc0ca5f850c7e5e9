"""The real docker CLI against our engine and a real local registry: push, pull, run's auto-pull, stored
credentials sent as X-Registry-Auth, digests. (The docker CLI is a client only here; skipped without it.)"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent
from support.registry import Registry, local_registry

pytestmark = pytest.mark.skipif(not shutil.which("docker"), reason="the docker CLI is not installed")
B = "pymachine/busybox:latest"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(tmp_path_factory.mktemp("agent")) as a:
        a.load_busybox()
        yield a


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def test_push_rmi_pull_run(agent: Agent, registry: Registry) -> None:
    ref = f"{registry.host}/cli/bb:1"
    agent.docker("tag", B, ref)
    pushed = agent.docker("push", ref).stdout
    assert "1: digest: sha256:" in pushed
    digest = pushed.split("digest: ")[1].split()[0]
    agent.docker("rmi", ref)
    pulled = agent.docker("pull", ref).stdout
    assert "Pull complete" in pulled or "Already exists" in pulled
    assert f"Digest: {digest}" in pulled and f"Downloaded newer image for {ref}" in pulled
    digests = agent.docker("images", "--digests", "--format", "{{.Repository}} {{.Digest}}").stdout
    assert f"{registry.host}/cli/bb {digest}" in digests
    # `docker run` of an image that is not here: 404 from create, then the CLI pulls and runs it
    agent.docker("tag", B, f"{registry.host}/cli/auto:1")
    agent.docker("push", f"{registry.host}/cli/auto:1")
    agent.docker("rmi", f"{registry.host}/cli/auto:1")
    run = agent.docker("run", "--rm", f"{registry.host}/cli/auto:1", "echo", "pulled-and-ran")
    assert run.stdout.strip() == "pulled-and-ran"
    assert "Unable to find image" in run.stderr


def test_pull_of_a_missing_image_fails_with_the_registry_reason(agent: Agent, registry: Registry) -> None:
    r = agent.docker("pull", f"{registry.host}/cli/none:1", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_stored_credentials_reach_the_registry(agent: Agent, tmp_path: Path) -> None:
    with local_registry(tmp_path / "authreg", users={"bob": "pw-of-bob"}) as reg:
        ref = f"{reg.host}/priv/bb:1"
        agent.docker("tag", B, ref)
        denied = agent.docker("push", ref, check=False)
        assert denied.returncode != 0 and "unauthorized" in (denied.stdout + denied.stderr).lower()
        config_dir = Path(agent.env()["DOCKER_CONFIG"])
        config_dir.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(b"bob:pw-of-bob").decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        try:
            assert "digest: sha256:" in agent.docker("push", ref).stdout
            agent.docker("rmi", ref)
            assert "Downloaded newer image" in agent.docker("pull", ref).stdout
        finally:
            (config_dir / "config.json").unlink()
