"""The terminal's size reaches a `-it` container before its process starts (HostConfig.ConsoleSize, exec's
ConsoleSize) and follows every resize of the client's terminal (SIGWINCH → resize call): the real docker CLI and
pymachine's own terminal pump, each on a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from collections.abc import Callable

from support.agent import Agent

B = "pymachine/busybox"


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _pty_session(
    argv: list[str], env: dict[str, str], rows: int, cols: int, script: Callable[[int, bytes], bytes | None]
) -> tuple[int, bytes]:
    """Run argv on a pty of rows x cols; `script(master, output so far)` may act (resize, type) and returns
    the bytes to type, if any. Returns (exit code, all output)."""
    pid, fd = pty.fork()
    if pid == 0:
        _winsize(0, rows, cols)
        os.execvpe(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        typed = script(fd, out)
        if typed:
            os.write(fd, typed)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def _resize_once(rows: int, cols: int) -> Callable[[int, bytes], bytes | None]:
    """After the container printed its first size: resize this terminal (the kernel sends SIGWINCH to the
    client running on it), once."""
    done: list[bool] = []

    def script(fd: int, out: bytes) -> bytes | None:
        if not done and b"ready" in out:
            _winsize(fd, rows, cols)
            done.append(True)
        return None

    return script


# The container polls its own size until it changes (at most 30 s), then prints it.
RESIZE_SCRIPT = (
    'f=$(stty size); echo "first=$f ready"; i=0; '
    'while [ "$(stty size)" = "$f" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; '
    'echo "second=$(stty size)"'
)


def test_docker_run_it_sees_the_size_at_once(agent: Agent) -> None:
    code, out = _pty_session(
        ["docker", "run", "--rm", "-it", B, "stty", "size"], agent.env(), 37, 101, lambda fd, o: None
    )
    assert code == 0, out
    assert b"37 101" in out, out


def test_docker_exec_it_sees_the_size_at_once(agent: Agent) -> None:
    cid = agent.docker("run", "-d", "--rm", B, "sleep", "120").stdout.strip()
    try:
        code, out = _pty_session(
            ["docker", "exec", "-it", cid, "stty", "size"], agent.env(), 29, 87, lambda fd, o: None
        )
        assert code == 0, out
        assert b"29 87" in out, out
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_docker_run_it_follows_a_resize(agent: Agent) -> None:
    code, out = _pty_session(
        ["docker", "run", "--rm", "-it", B, "sh", "-c", RESIZE_SCRIPT],
        agent.env(),
        24,
        80,
        _resize_once(50, 132),
    )
    assert b"first=24 80" in out, out
    assert b"second=50 132" in out, out


PYMACHINE_CHILD = """
import sys
from pymachine.app.cli import container_cmd
import docker
dc = docker.DockerClient(base_url=sys.argv[1], version="1.44", timeout=120)
sys.exit(container_cmd.main_with_client(dc, sys.argv[2:]))
"""


def test_pymachine_run_it_sends_size_and_resizes(agent: Agent) -> None:
    """pymachine's own `run -it` (the verb's code, bound to this engine instead of a machine's socket)."""
    argv = [sys.executable, "-c", PYMACHINE_CHILD, agent.url, "run", "--rm", "-it", B, "sh", "-c", RESIZE_SCRIPT]
    code, out = _pty_session(argv, agent.env(), 33, 91, _resize_once(45, 120))
    assert b"first=33 91" in out, out
    assert b"second=45 120" in out, out


def test_pymachine_exec_it_sends_size(agent: Agent) -> None:
    cid = agent.docker("run", "-d", "--rm", B, "sleep", "120").stdout.strip()
    try:
        argv = [sys.executable, "-c", PYMACHINE_CHILD, agent.url, "exec", "-it", cid, "stty", "size"]
        code, out = _pty_session(argv, agent.env(), 31, 77, lambda fd, o: None)
        assert code == 0, out
        assert b"31 77" in out, out
    finally:
        agent.docker("rm", "-f", cid, check=False)
