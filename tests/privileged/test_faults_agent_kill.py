"""Issue 16: kill -9 of the guest agent in the middle of a pull and of a build. The next agent has no half
image tagged, its store is consistent (the same pull or build then works), and a container that ran before is
still supervised. (The load case is in test_faults_disk_full.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.agent import Agent, start_agent
from support.poll import until
from support.random_image import random_image_archive
from support.registry import local_registry

B = "pymachine/busybox"


def _kill(agent: Agent) -> None:
    agent.proc.send_signal(9)
    agent.proc.wait(10)


def _repos(agent: Agent) -> str:
    return agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout


def test_kill_9_of_the_agent_during_a_pull(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "a")
    try:
        agent.load_busybox()
        agent.docker("run", "-d", "--name", "before", B, "sleep", "1d")
        with local_registry(tmp_path / "reg") as reg:
            ref = f"{reg.host}/faults/big:1"
            archive = tmp_path / "big.tar"
            random_image_archive(archive, 96 * 1024 * 1024, tag=ref)
            agent.docker("load", "-i", str(archive), timeout=120)
            agent.docker("push", ref, timeout=300)
            agent.docker("rmi", ref)
            pull = subprocess.Popen(
                ["docker", "pull", ref], env=agent.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            tmp = agent.state_dir / "images" / "tmp"
            until(
                lambda: sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) > 8 * 1024 * 1024,
                120,
                "the pull to be under way",
                every=0.05,
            )
            _kill(agent)
            assert pull.wait(60) != 0, "the pull finished before the kill: nothing was interrupted"
            agent = start_agent(tmp_path / "a", network_options=agent.network_options)
            assert ref.split("/", 1)[1] not in _repos(agent)
            assert agent.docker("inspect", "-f", "{{.State.Running}}", "before").stdout.strip() == "true"
            agent.docker("pull", ref, timeout=300)
            assert "faults/big:1" in _repos(agent)
    finally:
        agent.stop()


def test_kill_9_of_the_agent_during_a_build(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "a")
    try:
        agent.load_busybox()
        agent.docker("run", "-d", "--name", "before", B, "sleep", "1d")
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {B}\nRUN echo started > /step; sleep 20\nRUN echo done > /done\n"
        )
        build = subprocess.Popen(
            ["docker", "build", "-t", "faults-built:1", str(ctx)],
            env=agent.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # the RUN step's container is up: the build is half-way
        until(
            lambda: agent.docker("ps", "-q", "--filter", "ancestor=" + B).stdout.count("\n") >= 2, 120, "RUN"
        )
        _kill(agent)
        assert build.wait(60) != 0, "the build finished before the kill: nothing was interrupted"
        agent = start_agent(tmp_path / "a", network_options=agent.network_options)
        assert "faults-built" not in _repos(agent)
        assert agent.docker("inspect", "-f", "{{.State.Running}}", "before").stdout.strip() == "true"
        out = agent.docker("build", "-t", "faults-built:1", str(ctx), timeout=300).stdout
        assert "Successfully tagged faults-built:1" in out
        assert (
            agent.docker("run", "--rm", "faults-built:1", "cat", "/step", "/done").stdout == "started\ndone\n"
        )
    finally:
        agent.stop()
