"""docker-compose 1.29 (PyPI, in its own venv: it pins old dependencies) against our engine: a two-service app
on the project network with a named volume and a published port, brought up and taken down."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from support.agent import Agent

VENV = Path("/var/tmp/pm-compose-venv")
COMPOSE = VENV / "bin" / "docker-compose"


def ensure_compose() -> Path:
    """Install docker-compose 1.29.2 into a separate venv once (PyYAML 5.4 needs Cython < 3 to build)."""
    if COMPOSE.exists():
        return COMPOSE
    pip = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([*pip, "cython<3", "wheel", "setuptools"], check=True)
    subprocess.run([*pip, "--no-build-isolation", "pyyaml==5.4.1"], check=True)
    subprocess.run([*pip, "docker-compose==1.29.2", "docker<7", "requests<2.32", "urllib3<2"], check=True)
    return COMPOSE


COMPOSE_FILE = """\
version: "3.7"
services:
  web:
    image: pymachine/busybox
    command: ["httpd", "-f", "-p", "80", "-h", "/data"]
    ports: ["127.0.0.1:{port}:80"]
    volumes: ["shared:/data"]
  worker:
    image: pymachine/busybox
    command:
      - sh
      - -c
      - >-
        echo from-worker > /data/index.html;
        until wget -qO /data/seen http://web/; do sleep 0.5; done; sleep 300
    volumes: ["shared:/data"]
    depends_on: [web]
volumes:
  shared: {{}}
"""


def test_compose_up_two_services_then_down(agent: Agent, tmp_path: Path) -> None:
    compose = ensure_compose()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    project = tmp_path / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE.format(port=port))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(compose), "-p", "pmc", *args],
            cwd=project,
            env=agent.env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, (
            f"docker-compose {' '.join(args)}: {r.stdout}\n{r.stderr}\n{agent.log_tail()}"
        )
        return r

    run("up", "-d")
    try:
        seen = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                # /seen exists once the worker reached `web` by its service name over the project network
                seen = urllib.request.urlopen(f"http://127.0.0.1:{port}/seen", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert seen == b"from-worker\n"
        ps = run("ps").stdout
        assert "pmc_web_1" in ps and "pmc_worker_1" in ps and "Up" in ps
        logs = run("logs", "--no-color", "worker")
        assert logs.returncode == 0
        assert "pmc_default" in agent.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert "pmc_shared" in agent.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    finally:
        run("down", "-v", "-t", "1")
    assert (
        agent.docker("ps", "-a", "--filter", "label=com.docker.compose.project=pmc", "-q").stdout.strip()
        == ""
    )
    assert "pmc_default" not in agent.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "pmc_shared" not in agent.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
