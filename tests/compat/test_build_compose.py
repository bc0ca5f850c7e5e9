"""docker-compose 1.29 `build:` (docker-py's legacy build under it) against our agent: build args, target,
an image tag, a cached rebuild, and running the built service."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.agent import BUSYBOX_REF, Agent
from support.build import build_agent, write_context  # noqa: F401 - build_agent is a fixture

COMPOSE_FILE = """\
version: "3.7"
services:
  app:
    build:
      context: ./app
      target: final
      args:
        GREETING: from-compose
    image: compose-built:1
"""

DOCKERFILE = f"""\
FROM {BUSYBOX_REF} AS base
ARG GREETING=default
RUN echo $GREETING > /greeting
FROM base AS final
COPY msg.txt /msg.txt
CMD ["cat", "/greeting", "/msg.txt"]
FROM base AS unused
RUN false
"""


def compose() -> Path:
    from compat.test_compose import ensure_compose  # the compose owner's pinned venv

    return ensure_compose()


def run_compose(agent: Agent, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = agent.env()
    env["COMPOSE_PROJECT_NAME"] = "buildtest"
    proc = subprocess.run(
        [str(compose()), "-f", str(project / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=600,
    )
    assert proc.returncode == 0, f"docker-compose {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_compose_build_with_args_target_and_cache(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    project = write_context(
        tmp_path / "proj",
        {"docker-compose.yml": COMPOSE_FILE, "app/Dockerfile": DOCKERFILE, "app/msg.txt": "hello\n"},
    )
    first = run_compose(build_agent, project, "build")
    assert "Successfully tagged compose-built:1" in first.stdout + first.stderr
    again = run_compose(build_agent, project, "build")
    assert (again.stdout + again.stderr).count("Using cache") >= 4
    out = run_compose(build_agent, project, "run", "--rm", "app").stdout
    assert out.replace("\r\n", "\n") == "from-compose\nhello\n"
    run_compose(build_agent, project, "down")
