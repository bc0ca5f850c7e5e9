"""The terminal's size reaches a `-it` container before its process starts (HostConfig.ConsoleSize, exec's
ConsoleSize) and follows every resize of the client's terminal (SIGWINCH → resize call): the real docker CLI
and pymachine's own terminal pump, each on a real pseudo-terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support.agent import Agent
from support.pty_session import Resizer, pty_session

B = "pymachine/busybox"


# The container polls its own size until it changes (at most 30 s), then prints it.
RESIZE_SCRIPT = (
    'f=$(stty size); echo "first=$f ready"; i=0; '
    'while [ "$(stty size)" = "$f" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
    'echo "second=$(stty size)"'
)


def test_docker_run_it_sees_the_size_at_once(agent: Agent) -> None:
    code, out = pty_session(
        ["docker", "run", "--rm", "-it", B, "stty", "size"], agent.env(), 37, 101, lambda fd, o: None
    )
    assert code == 0, out
    assert b"37 101" in out, out


def test_docker_exec_it_sees_the_size_at_once(agent: Agent) -> None:
    cid = agent.docker("run", "-d", "--rm", B, "sleep", "120").stdout.strip()
    try:
        code, out = pty_session(
            ["docker", "exec", "-it", cid, "stty", "size"], agent.env(), 29, 87, lambda fd, o: None
        )
        assert code == 0, out
        assert b"29 87" in out, out
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_docker_run_it_follows_a_resize(agent: Agent) -> None:
    code, out = pty_session(
        ["docker", "run", "--rm", "-it", B, "sh", "-c", RESIZE_SCRIPT],
        agent.env(),
        24,
        80,
        resizer := Resizer(50, 132),
    )
    assert b"first=24 80" in out, out
    assert any(size in out for size in resizer.sizes), (out, resizer.sizes)


# The `pymachine` entry point with its container verbs bound to this engine instead of a machine's socket.
PYMACHINE_CHILD = """
import sys
import docker
from pymachine.app.cli.main import main
dc = docker.DockerClient(base_url=sys.argv[1], version="1.44", timeout=120)
sys.exit(main(sys.argv[2:], client=dc))
"""


def test_pymachine_run_it_sends_size_and_resizes(agent: Agent) -> None:
    """pymachine's own `run -it` (the verb's code, bound to this engine instead of a machine's socket)."""
    argv = [
        sys.executable,
        "-c",
        PYMACHINE_CHILD,
        agent.url,
        "run",
        "--rm",
        "-it",
        B,
        "sh",
        "-c",
        RESIZE_SCRIPT,
    ]
    code, out = pty_session(argv, agent.env(), 33, 91, resizer := Resizer(45, 120))
    assert b"first=33 91" in out, out
    assert resizer.sizes[0] in out, out  # pymachine watches SIGWINCH before it shows any output


def test_pymachine_exec_it_sends_size(agent: Agent) -> None:
    cid = agent.docker("run", "-d", "--rm", B, "sleep", "120").stdout.strip()
    try:
        argv = [sys.executable, "-c", PYMACHINE_CHILD, agent.url, "exec", "-it", cid, "stty", "size"]
        code, out = pty_session(argv, agent.env(), 31, 77, lambda fd, o: None)
        assert code == 0, out
        assert b"31 77" in out, out
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_pymachine_pull_on_a_terminal_draws_layer_bars(agent: Agent, tmp_path) -> None:
    """`pymachine pull` on a terminal: rich's live display with one line per layer (its id, status, bytes),
    then the pulled name; through a pipe the same pull prints plain status lines."""
    from support.registry import busybox_layer, docker_archive, file, local_registry, tar_bytes

    with local_registry(tmp_path / "reg") as reg:
        ref = f"{reg.host}/cli/bars:1"
        noise = tar_bytes([file("noise.bin", os.urandom(4_000_000))])  # a layer worth a bar
        agent.client().images.load(docker_archive([busybox_layer(), noise], [ref]))
        agent.docker("push", ref)
        agent.docker("rmi", ref)
        argv = [sys.executable, "-c", PYMACHINE_CHILD, agent.url, "pull", ref]
        env = {**agent.env(), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        code, out = pty_session(argv, env, 30, 120, lambda fd, o: None)
        assert code == 0, out
        text = out.decode(errors="replace")
        assert "\x1b[" in text  # drawn, not printed: the live display moves the cursor
        assert "Pull complete" in text or "Already exists" in text
        assert "MB" in text  # the bytes column of the layer's bar
        assert "━" in text  # rich's bar
        assert text.endswith(f"{ref}\r\n")  # the result, on stdout, after the display ended

        assert re.search(r"\x1b\[(3\d|38;5;\d+)m", text)  # coloured

        agent.docker("rmi", ref)
        code, out = pty_session(argv, {**env, "NO_COLOR": "1"}, 30, 120, lambda fd, o: None)
        assert code == 0 and "Pull complete" in out.decode(errors="replace"), out
        assert not re.search(rb"\x1b\[(3\d|38;5;\d+)m", out), out  # NO_COLOR: still drawn, never coloured

        agent.docker("rmi", ref)
        piped = subprocess.run(argv, env=agent.env(), capture_output=True, text=True, timeout=120)
        assert piped.returncode == 0, piped.stderr
        assert "\x1b[" not in piped.stderr and ": Pull complete" in piped.stderr
        assert piped.stdout.splitlines()[-1].endswith(ref)
