"""Containers outlive the agent: a new agent on the same state serves them (inspect, logs, exec, stop), and a
host agent that reconnects gets the published ports in its resync. Also: the TCP listener and `ping`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from support.agent import AGENT_SRC, start_agent

B = "pymachine/busybox"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _resync(agent) -> list[dict]:  # type: ignore[no-untyped-def]
    """Connect as a host agent, read hello + resync lines, disconnect."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(agent.socket_path))
    s.sendall(b"GET /pymachine/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    f = s.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    lines = []
    try:
        while True:
            n = int(f.readline().strip(), 16)
            lines.append(json.loads(f.read(n)))
            f.readline()
    except (TimeoutError, OSError, ValueError):
        pass
    s.close()
    return lines


def test_containers_and_ports_survive_an_agent_restart(tmp_path: Path) -> None:
    base = tmp_path / "a"
    agent = start_agent(base)
    port = _free_port()
    try:
        agent.load_busybox()
        agent.docker(
            "run",
            "-d",
            "--name",
            "survivor",
            "-p",
            f"127.0.0.1:{port}:80",
            B,
            "sh",
            "-c",
            "echo before; sleep 300",
        )
        # the old agent goes away (SIGTERM); the container keeps running under its supervisor
        agent.proc.terminate()
        agent.proc.wait(15)
        agent2 = start_agent(base, network_options=agent.network_options)
        agent = agent2
        assert agent.docker("inspect", "--format", "{{.State.Running}}", "survivor").stdout.strip() == "true"
        assert agent.docker("logs", "survivor").stdout == "before\n"
        assert agent.docker("exec", "survivor", "echo", "after").stdout == "after\n"
        assert agent.docker("port", "survivor").stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
        lines = _resync(agent)
        assert lines[0]["type"] == "hello"
        assert any(e.get("action") == "add" and e["host_port"] == port for e in lines[1:]), lines
        agent.docker("stop", "-t", "1", "survivor")
        assert agent.docker("wait", "survivor").stdout.strip() == "137"
    finally:
        agent.stop()


def test_tcp_listener_and_ping_subcommand(tmp_path: Path) -> None:
    port = _free_port()
    agent = start_agent(tmp_path / "t", extra_args=["--tcp", f"127.0.0.1:{port}"])
    try:
        env = {**os.environ, "PYTHONPATH": str(AGENT_SRC)}
        r = subprocess.run(
            [sys.executable, "-m", "pymachine_agent", "ping", "--socket", str(agent.socket_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert r.returncode == 0 and r.stdout.strip() == "OK api 1.44"
        r = subprocess.run(
            ["docker", "-H", f"tcp://127.0.0.1:{port}", "version", "--format", "{{.Server.APIVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "DOCKER_CONFIG": str(tmp_path)},
        )
        assert r.stdout.strip() == "1.44", r.stderr
        assert oct(agent.socket_path.stat().st_mode & 0o777) == "0o600"
    finally:
        agent.stop()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pymachine_agent",
            "ping",
            "--socket",
            str(agent.socket_path),
            "--timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 1
