"""Compose apps (docs/deploy.md, "Compose apps") on the shared booted machine: a pushed tree with a
compose.yaml and no Dockerfile builds both of its services (a web front end whose CGI calls a backend by its
service name), answers through the app's port, switches on the next push with a request loop that sees no
failed request, refuses a compose key outside the supported subset by name while the old release keeps
serving, rolls back, takes config changes into every service, and `rm` removes every container, network and
tag. One app, tests in order (no boot of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import GitProject, RequestLoop
from support.hostagent_vm import VmMachine, env_of, free_port

APP = "cw"
COMPOSE = """\
services:
  web:                      # first in the file, started second (depends_on)
    build: ./web
    ports: ["8000:80"]      # the app's port goes to 80 (the host port 8000 is not used)
    depends_on: [backend]
  backend:
    build:
      context: backend
      dockerfile: Backend.dockerfile
      args: {{BODY: "{body}"}}
    environment:
      SUFFIX: plain
    command:
      - sh
      - -c
      - echo "$(cat /base.txt) $SUFFIX" > /www/index.html; exec httpd -f -p 9000 -h /www
x-notes: ignored, as by Compose
"""
WEB = """\
FROM pymachine/busybox
COPY call /www/cgi-bin/call
RUN chmod 755 /www/cgi-bin/call
STOPSIGNAL SIGKILL
CMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]
"""
CALL = """\
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "web-{web}+$(wget -q -O- http://backend:9000/)"
"""
BACKEND = """\
FROM pymachine/busybox
ARG BODY
RUN echo "$BODY" > /base.txt
STOPSIGNAL SIGKILL
"""


class Project(GitProject):
    def commit(self, web: str, body: str, compose: str = COMPOSE) -> None:
        files = {
            "compose.yaml": compose.format(body=body),
            "web/Dockerfile": WEB,
            "web/call": CALL.format(web=web),
            "backend/Backend.dockerfile": BACKEND,
        }
        self.commit_files(files, f"web {web}, backend {body}")


@pytest.fixture(scope="module")
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    vm: VmMachine = request.getfixturevalue("hostagent_machine")
    port = free_port()
    with env_of(vm):
        # pymachine's folder on PATH, as an install puts it (git-remote-pymachine is installed beside it)
        path = f"{Path(sys.executable).parent}{os.pathsep}{vm.env['PATH']}"
        env = {**vm.env, "PATH": path, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path_factory.mktemp("gh"))}
        made = subprocess.run(
            ["pymachine", "app", "create", APP, "--machine", vm.name, "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "not on PATH" not in made.stdout, made.stdout
        project = Project(tmp_path_factory.mktemp("compose") / "project", env)
        # the first printed remote: pymachine::cw, through git-remote-pymachine over the machine's own link
        remote_add = next(line.strip() for line in made.stdout.splitlines() if "git remote add" in line)
        assert remote_add == f"git remote add pymachine pymachine::{APP}"
        subprocess.run(remote_add, shell=True, cwd=project.root, check=True, env=env)
        try:
            yield vm, project, port
        finally:
            vm.pymachine("app", "rm", APP, check=False)


def get(port: int, timeout: float = 60) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/cgi-bin/call", timeout=timeout) as resp:
        return resp.read().decode().strip()


def app_objects(vm: VmMachine) -> tuple[list[str], list[str]]:
    containers = vm.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    networks = vm.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    return (
        sorted(n for n in containers if n.startswith(f"app-{APP}-")),
        sorted(n for n in networks if n.startswith(f"app-{APP}")),
    )


def test_a_compose_push_builds_both_services_and_the_web_one_calls_the_backend(app: tuple) -> None:
    vm, project, port = app
    project.commit(web="1", body="one")
    pushed = project.git("push", "pymachine", "main")
    out = pushed.stderr
    assert "service 'backend': building backend" in out and "service 'web': building web" in out, out
    assert f"port {port} goes to service 'web' port 80" in out, out  # which service the push routed
    assert "waiting for app-cw-v1-web: port 80 accepting" in out, out
    assert get(port) == "web-1+one plain"  # through the router, web's CGI, backend by its service name
    containers, networks = app_objects(vm)
    assert containers == ["app-cw-router", "app-cw-v1-backend", "app-cw-v1-web"]
    assert networks == ["app-cw", "app-cw-v1"]
    assert "backend, web (port 80)" in vm.pymachine("app", "info", APP).stdout
    assert '"Serving": "running"' in vm.pymachine("app", "info", APP, "--format", "json").stdout


def test_a_second_compose_push_switches_with_no_failed_request(app: tuple) -> None:
    vm, project, port = app
    project.commit(web="2", body="two")
    requests = RequestLoop(lambda: get(port, timeout=RequestLoop.TIMEOUT_S)).start()
    seen, errors = requests.seen, requests.errors
    try:
        pushed = project.git("push", "pymachine", "main")
    finally:
        requests.stop()
    assert errors == [], f"{len(errors)} failed requests during the switch: {errors[:3]}\n{pushed.stderr}"
    assert "web-1+one plain" in seen and seen[-1] == "web-2+two plain", seen[-3:]
    # a v2 web never reached v1's backend (each release has its own network)
    assert not [s for s in seen if s.startswith("web-2") and "one" in s], set(seen)
    assert "no connection to app-cw-v1-web left" in pushed.stderr, pushed.stderr
    containers, networks = app_objects(vm)
    assert containers == ["app-cw-router", "app-cw-v2-backend", "app-cw-v2-web"]
    assert networks == ["app-cw", "app-cw-v2"]


def test_a_compose_key_outside_the_subset_is_refused_by_name(app: tuple) -> None:
    vm, project, port = app
    project.commit(
        web="3",
        body="three",
        compose=COMPOSE.replace("    depends_on:", "    volumes: [data:/d]\n    depends_on:"),
    )
    pushed = project.git("push", "pymachine", "main", check=False)
    project.git("reset", "-q", "--hard", "HEAD~1")
    assert pushed.returncode != 0 and "[remote rejected] main -> main" in pushed.stderr, pushed.stderr
    assert "compose.yaml: service 'web': 'volumes' is not supported" in pushed.stderr, pushed.stderr
    assert get(port) == "web-2+two plain"


def test_rollback_and_config_set_restart_every_service(app: tuple) -> None:
    vm, project, port = app
    vm.pymachine("app", "rollback", APP, "v1")
    assert get(port) == "web-1+one plain"
    assert app_objects(vm)[0] == ["app-cw-router", "app-cw-v1-backend", "app-cw-v1-web"]
    out = vm.pymachine("app", "config", "set", APP, "SUFFIX=configured")
    assert out.stdout.strip() == f"{APP} v3"
    assert get(port) == "web-1+one configured"  # v1's images, the app's config over the file's environment


def test_rm_removes_every_service_network_and_tag(app: tuple) -> None:
    vm, project, port = app
    vm.pymachine("app", "rm", APP)
    assert app_objects(vm) == ([], [])
    repos = vm.docker("images", "--format", "{{.Repository}}").stdout.split()
    assert not [r for r in repos if r.startswith(f"app-{APP}")], repos
