"""Builds of untrusted repositories against the real agent on this host: a hostile .dockerignore cannot stall
the engine, and an image's /etc/passwd (a link out of its rootfs, a FIFO) is read inside the image only, and
never blocks, for COPY --chown (read by the engine), USER and exec -u."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.agent import BUSYBOX_REF, Agent, running_agent
from support.build import build_agent, context_tar, errors, post_build, stream_text  # noqa: F401

BB = BUSYBOX_REF
SOMEONE = "someone:x:4242:4242::/guest-secret-home:/bin/sh\n"  # only in the guest file, never in an image


@pytest.fixture
def agent(build_agent: Agent) -> Agent:  # noqa: F811 - the module's agent, busybox loaded (support.build)
    return build_agent


@pytest.fixture(scope="module")
def guest_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of the guest (this host), outside every rootfs, in passwd format."""
    path = tmp_path_factory.mktemp("guest") / "passwd"
    path.write_text(SOMEONE)
    return path


def build(agent: Agent, dockerfile: str, query: str = "", files: dict | None = None) -> list[dict]:
    # the timeout is the hang guard: a build that blocks on a FIFO fails the test instead of hanging it
    return post_build(agent, context_tar({"Dockerfile": dockerfile, **(files or {})}), query, timeout=90)


def test_hostile_dockerignore_does_not_stall_the_engine(tmp_path: Path) -> None:
    deep = "/".join(["a"] * 60)
    files = {
        "Dockerfile": f"FROM {BB}\nCOPY . /ctx\nRUN find /ctx -type f | sort\n",
        ".dockerignore": "\n".join(
            [
                "/".join(["**"] * 12) + "/x",  # 12 stacked `**/`: exponential for a backtracking regex
                "**/" + "a**/" * 12 + "b",
                "**/a**" * 12 + "b",
                "**/drop.txt",
            ]
        ),
        f"{deep}/y": "kept",
        f"{deep}/drop.txt": "dropped",
    }
    with running_agent(tmp_path / "agent") as agent:  # its own agent: on a stalled engine nothing else runs
        agent.load_busybox()
        result: list[list[dict]] = []
        thread = threading.Thread(
            target=lambda: result.append(post_build(agent, context_tar(files), "t=iso-ignore", timeout=120)),
            daemon=True,
        )
        thread.start()
        answers = 0
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            # a second connection: must answer while the build is in flight (a socket timeout fails the test)
            status, _, _ = agent.request("GET", "/v1.44/containers/json?all=1", timeout=10)
            assert status == 200
            answers += 1
            time.sleep(0.2)
        thread.join(5)
        assert not thread.is_alive(), "the build did not finish"
        assert answers >= 1 or result
        msgs = result[0]
        assert not errors(msgs), msgs
        text = stream_text(msgs)
        assert f"/ctx/{deep}/y\n" in text and "drop.txt" not in text
        status, _, _ = agent.request("GET", "/v1.44/containers/json", timeout=10)
        assert status == 200


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_passwd_linked_out_of_the_image_is_looked_up_inside(
    agent: Agent, guest_file: Path, style: str
) -> None:
    target = str(guest_file) if style == "absolute" else "../" * 12 + str(guest_file).lstrip("/")
    tag = f"iso-passwd-{style}"
    msgs = build(agent, f"FROM {BB}\nRUN rm /etc/passwd && ln -s {target} /etc/passwd\n", f"t={tag}")
    assert not errors(msgs), msgs

    # COPY --chown: resolved by the engine on the image's rootfs
    msgs = build(agent, f"FROM {tag}\nCOPY --chown=someone f /f\nRUN stat -c %u /f\n", files={"f": "x"})
    text = stream_text(msgs) + str(errors(msgs))
    assert "4242" not in text
    assert "unable to find user someone" in errors(msgs)[0]["error"]
    # USER and RUN: resolved inside the container
    msgs = build(agent, f"FROM {tag}\nUSER someone\nRUN id -u\n")
    assert "4242" not in stream_text(msgs) and "unable to find user someone" in errors(msgs)[0]["error"]
    # exec -u and run -u
    run = agent.docker("run", "--rm", "-u", "someone", tag, "id", "-u", check=False)
    assert run.returncode != 0 and "4242" not in run.stdout + run.stderr
    assert "unable to find user someone" in run.stderr
    cid = agent.docker("run", "-d", tag, "sleep", "60").stdout.strip()
    try:
        ex = agent.docker("exec", "-u", "someone", cid, "id", "-u", check=False, timeout=60)
        assert ex.returncode != 0 and "4242" not in ex.stdout + ex.stderr
        assert "unable to find user someone" in ex.stdout + ex.stderr
    finally:
        agent.docker("rm", "-f", cid, check=False)
    # the same path made inside the image is what the link means
    inside = f"FROM {tag}\nRUN mkdir -p {guest_file.parent} && echo someone:x:7:7::/:/bin/sh > {guest_file}\n"
    msgs = build(agent, inside + "COPY --chown=someone f /f\nRUN stat -c %u /f\n", "nocache=1", {"f": "x"})
    assert not errors(msgs) and "\n7\n" in stream_text(msgs)


def test_passwd_fifo_fails_clearly_instead_of_hanging(agent: Agent) -> None:
    msgs = build(agent, f"FROM {BB}\nRUN rm /etc/passwd && mkfifo /etc/passwd\n", "t=iso-passwd-fifo")
    assert not errors(msgs), msgs
    msgs = build(agent, "FROM iso-passwd-fifo\nCOPY --chown=someone f /f\n", files={"f": "x"})
    assert "not a regular file" in errors(msgs)[0]["error"]
    run = agent.docker("run", "--rm", "-u", "someone", "iso-passwd-fifo", "true", check=False, timeout=60)
    assert run.returncode != 0 and "not a regular file" in run.stderr
    # exec -u in a running container whose passwd became a FIFO after it started
    cid = agent.docker(
        "run", "-d", BB, "sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd && touch /ready && sleep 60"
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while agent.docker("exec", cid, "test", "-e", "/ready", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the container did not make its FIFO"
            time.sleep(0.2)
        ex = agent.docker("exec", "-u", "someone", cid, "id", check=False, timeout=60)
        assert ex.returncode != 0 and "not a regular file" in ex.stdout + ex.stderr
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_oversized_passwd_is_refused(agent: Agent) -> None:
    make = f"FROM {BB}\nRUN head -c 5000000 /dev/zero | tr '\\\\0' x >> /etc/passwd\n"
    msgs = build(agent, make, "t=iso-passwd-big")
    assert not errors(msgs), msgs
    msgs = build(agent, "FROM iso-passwd-big\nCOPY --chown=root f /f\n", files={"f": "x"})
    assert "larger than" in errors(msgs)[0]["error"]
