"""`docker diff` resolves an image layer's symlinks inside that layer (inroot.py), never on the guest.

An image whose /lnk is a symlink to a folder of the machine itself (here: a folder of this host, where the
privileged tier runs the agent); a container replaces /lnk with a folder and creates a file in it that the
machine's folder also has. The file is new to the container ("A"); an engine that joins the layer path and
follows the symlink looks at the machine's folder instead, and reports it changed ("C"), which tells the
container whether a path exists outside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent

B = "pymachine/busybox"
IMAGE = "pymachine-test/diff-link:1"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(Path(tmp_path_factory.mktemp("agent"))) as a:
        a.load_busybox()
        yield a


def test_docker_diff_never_follows_a_layer_symlink_onto_the_machine(agent: Agent, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "only-here").write_text("the machine's own file\n")
    try:
        agent.docker("run", "--name", "diff-link-base", B, "ln", "-s", str(outside), "/lnk")
        agent.docker("commit", "diff-link-base", IMAGE)
        agent.docker(
            "run", "--name", "diff-link", IMAGE, "sh", "-c", "rm /lnk && mkdir /lnk && touch /lnk/only-here"
        )
        changes = agent.docker("diff", "diff-link").stdout.splitlines()
        assert "A /lnk/only-here" in changes, changes
        assert "C /lnk/only-here" not in changes
    finally:
        agent.docker("rm", "-f", "diff-link", "diff-link-base", check=False)
        agent.docker("rmi", IMAGE, check=False)
