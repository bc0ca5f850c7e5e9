"""Issue 22: what a broad client suite found, each item used the way the failing client used it."""

from __future__ import annotations

import docker
import docker.errors
import pytest
from support.agent import Agent

B = "pymachine/busybox"


@pytest.fixture
def dc(agent: Agent) -> docker.DockerClient:
    return agent.client()


# --- swarm endpoints while swarm is off: dockerd's 503s -------------------------------------------------


def test_leave_swarm_force_is_nothing_to_leave(dc: docker.DockerClient) -> None:
    # docker-py takes the 503 "not part of a swarm" as success; a 404 raised NotFound, breaking teardowns
    assert dc.swarm.leave(force=True) is True


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.swarm.reload(),
        lambda c: c.nodes.list(),
        lambda c: c.services.list(),
        lambda c: c.secrets.list(),
        lambda c: c.configs.list(),
        lambda c: c.api.tasks(),
        lambda c: c.api.inspect_node("n1"),
        lambda c: c.api.remove_service("s1"),
    ],
    ids=["swarm", "nodes", "services", "secrets", "configs", "tasks", "node", "rm-service"],
)
def test_swarm_calls_answer_503_not_a_manager(dc: docker.DockerClient, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(docker.errors.APIError) as err:
        call(dc)
    assert err.value.status_code == 503
    assert "not a swarm manager" in str(err.value.explanation)


def test_swarm_init_is_refused_with_a_reason(dc: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        dc.swarm.init()
    assert err.value.status_code == 503
    assert "swarm mode is not supported" in str(err.value.explanation)


def test_cli_service_ls_says_not_a_manager(agent: Agent) -> None:
    out = agent.docker("service", "ls", check=False)
    assert out.returncode != 0
    assert "This node is not a swarm manager" in out.stderr
