"""A container fills the disk the engine keeps its state on (issue 16), on the real agent: its state folder is
a small tmpfs here, the guest's disk in a VM. The engine stays up, lists and removes without hanging, a load
fails saying "no space left on device", a restarted agent starts (its space reserve), the other container's
log lines that fit are kept, and removing the filler frees the space for everything again."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, start_agent
from support.random_image import random_image_archive

B = "pymachine/busybox"


def _wait(cond, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    base = tmp_path / "a"
    (base / "state").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(base / "state")], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base / "state")], check=False)


def _free(agent: Agent) -> int:
    st = os.statvfs(agent.state_dir)
    return st.f_bavail * st.f_frsize


def test_a_container_fills_the_disk(small_disk: Path, tmp_path: Path) -> None:
    agent = start_agent(small_disk)
    try:
        agent.load_busybox()
        agent.docker(
            "run",
            "-d",
            "--name",
            "talker",
            B,
            "sh",
            "-c",
            "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.1; done",
        )
        _wait(lambda: "line 5" in agent.docker("logs", "talker").stdout, "the talker's first lines")
        agent.docker(
            "run", "-d", "--name", "filler", B, "sh", "-c", "dd if=/dev/zero of=/fill bs=1M; sleep 100000"
        )
        _wait(lambda: _free(agent) < 1024 * 1024, "the disk to fill")

        # the engine stays up: listings answer, the talker is still running and supervised
        ps = agent.docker("ps", "--format", "{{.Names}}", timeout=20).stdout.split()
        assert {"talker", "filler"} <= set(ps)
        agent.docker("inspect", "talker", timeout=20)

        # a load that needs room fails saying so (not a bare 500 traceback)
        big = tmp_path / "big.tar"
        random_image_archive(big, 4 * 1024 * 1024)
        load = agent.docker("load", "-i", str(big), check=False, timeout=60)
        assert load.returncode != 0
        assert "no space left on device" in (load.stdout + load.stderr).lower(), load.stdout + load.stderr

        # an agent restarted on the full disk starts, and still knows its containers
        agent.proc.terminate()
        agent.proc.wait(20)
        agent = start_agent(small_disk, network_options=agent.network_options)
        assert {"talker", "filler"} <= set(
            agent.docker("ps", "--format", "{{.Names}}", timeout=20).stdout.split()
        )

        # removing the filler frees the space; the talker's log goes on
        agent.docker("rm", "-f", "filler", timeout=30)
        assert _free(agent) > 40 * 1024 * 1024
        seen = len(agent.docker("logs", "talker").stdout.splitlines())
        _wait(lambda: len(agent.docker("logs", "talker").stdout.splitlines()) > seen + 5, "new log lines")
        agent.docker("load", "-i", str(big), timeout=60)
        log = agent.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
    finally:
        agent.stop()


def test_kill_9_of_the_agent_during_a_load(tmp_path: Path) -> None:
    """The agent dies in the middle of `docker load`: the next agent has no half image tagged, its store is
    consistent (the same load then works), and a container that ran before is still supervised."""
    base = tmp_path / "a"
    agent = start_agent(base)
    try:
        agent.load_busybox()
        agent.docker("run", "-d", "--name", "before", B, "sleep", "1d")
        big = tmp_path / "big.tar"
        random_image_archive(big, 96 * 1024 * 1024)
        load = subprocess.Popen(
            ["docker", "load", "-i", str(big)],
            env=agent.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        blobs = agent.state_dir / "images"
        _wait(
            lambda: sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file()) > 8 * 1024 * 1024,
            "the load",
        )
        agent.proc.send_signal(9)
        agent.proc.wait(10)
        assert load.wait(60) != 0, "the load finished before the kill: nothing was interrupted"
        agent = start_agent(base, network_options=agent.network_options)
        assert "big" not in agent.docker("images", "--format", "{{.Repository}}").stdout
        assert agent.docker("inspect", "-f", "{{.State.Running}}", "before").stdout.strip() == "true"
        agent.docker("load", "-i", str(big), timeout=120)
        assert "big" in agent.docker("images", "--format", "{{.Repository}}").stdout
        agent.docker("run", "--rm", "big:1", "true", check=False)  # no shell in it: only that it resolves
        agent.docker("image", "rm", "big:1")
    finally:
        agent.stop()
