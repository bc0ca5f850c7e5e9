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


# --- create ------------------------------------------------------------------------------------------------


def test_env_entry_without_equals_is_kept_as_given(dc: docker.DockerClient) -> None:
    c = dc.containers.create(B, "true", environment=["FOO=bar", "BARE"])
    try:
        env = c.attrs["Config"]["Env"]
        assert "FOO=bar" in env and "BARE" in env
    finally:
        c.remove()


def test_unknown_log_driver_is_refused_at_create(dc: docker.DockerClient) -> None:
    from docker.types import LogConfig

    with pytest.raises(docker.errors.APIError) as err:
        dc.containers.create(B, "true", log_config=LogConfig(type="no-such-driver"))
    assert err.value.status_code == 400
    assert "no-such-driver" in str(err.value.explanation)


def test_host_config_runtime_is_runc(dc: docker.DockerClient) -> None:
    c = dc.containers.create(B, "true")
    try:
        assert c.attrs["HostConfig"]["Runtime"] == "runc"
    finally:
        c.remove()


def test_container_prune_reports_space_reclaimed(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sh", "-c", "head -c 300000 /dev/zero > /big"], detach=True)
    c.wait(timeout=60)
    result = dc.containers.prune()
    assert c.id in (result.get("ContainersDeleted") or [])
    assert result["SpaceReclaimed"] >= 300000


def test_bare_env_entry_is_kept_in_config_and_unset_in_the_process(agent: Agent) -> None:
    # `-e NOSUCHVAR` with no such variable in the CLI's own environment sends a bare "NOSUCHVAR": kept in
    # Config.Env, absent from the process (not "NOSUCHVAR=")
    assert "NOSUCHVAR" not in agent.env()
    name = "breadth-bare-env"
    out = agent.docker("run", "--name", name, "-e", "NOSUCHVAR", "-e", "SET=1", B, "env")
    try:
        assert "SET=1" in out.stdout and "NOSUCHVAR" not in out.stdout
        cfg = agent.docker("inspect", "-f", "{{json .Config.Env}}", name).stdout
        assert '"NOSUCHVAR"' in cfg
    finally:
        agent.docker("rm", "-f", name, check=False)


def test_log_driver_none_is_kept_and_logs_refuse_to_read(agent: Agent) -> None:
    name = "breadth-nolog"
    agent.docker("run", "--name", name, "--log-driver", "none", B, "echo", "hi")
    try:
        out = agent.docker("inspect", "-f", "{{.HostConfig.LogConfig.Type}}", name)
        assert out.stdout.strip() == "none"
        logs = agent.docker("logs", name, check=False)
        assert logs.returncode != 0 and "does not support reading" in logs.stderr
    finally:
        agent.docker("rm", "-f", name, check=False)
