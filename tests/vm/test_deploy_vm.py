"""`git push` deploys (pymachine app, docs/deploy.md) on the shared booted machine: a push of a small web app
built FROM the local busybox image answers on its port; a second push switches with a request loop running and
not one failed request; a broken build and a release that never answers fail the push while the old release
keeps serving; rollback; config set; rm. The tests run in order and share one app (one machine boot)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.deploy import GitProject, RequestLoop
from support.hostagent_vm import VmMachine, env_of, free_port, wait_for

APP = "web"
DOCKERFILE = """\
FROM pymachine/busybox
RUN echo {body} > /www/index.html
# answers a POST once its one-byte body came: a request the switch test holds open as long as it wants
RUN mkdir -p /www/cgi-bin && printf '%s\\n' '#!/bin/sh' 'head -c 1 >/dev/null' \\
    'echo Content-Type: text/plain' echo 'cat /www/index.html' > /www/cgi-bin/held && \\
    chmod 755 /www/cgi-bin/held
# busybox httpd as PID 1 ignores SIGTERM: say how it stops, so a switch does not wait out the stop timeout
STOPSIGNAL SIGKILL
{healthcheck}CMD ["sh", "-c", "echo \\"greeting=$GREETING\\" > /www/env.txt; exec httpd -f -p $PORT -h /www"]
"""


class Project(GitProject):
    def commit(self, dockerfile: str, message: str) -> None:
        self.commit_files({"Dockerfile": dockerfile}, message)

    def push(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.git("push", "pymachine", "main", check=check)


@pytest.fixture(scope="module")
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    vm: VmMachine = request.getfixturevalue("hostagent_machine")
    port = free_port()
    with env_of(vm):
        made = vm.pymachine("app", "create", APP, "--machine", vm.name, "--port", str(port))
        env = {**vm.env, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path_factory.mktemp("githome"))}
        project = Project(tmp_path_factory.mktemp("deploy") / "project", env)
        # the repository on this computer and its hook (test_deploy_compose_vm pushes through the helper)
        remote_add = next(line.strip() for line in made.stdout.splitlines() if "repo.git" in line)
        subprocess.run(remote_add, shell=True, cwd=project.root, check=True, env=env)  # the printed command
        try:
            yield vm, project, port
        finally:
            vm.pymachine("app", "rm", APP, check=False)


def get(port: int, path: str = "/", timeout: float = 60) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.read().decode().strip()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_push_builds_and_answers_on_its_port(app: tuple) -> None:
    vm, project, port = app
    project.commit(DOCKERFILE.format(body="one", healthcheck=""), "v1")
    pushed = project.push()
    # the build's own output and the stages reached the pusher's terminal through git
    assert "remote: Step 1/" in pushed.stderr and "FROM pymachine/busybox" in pushed.stderr
    assert "remote: stage 3 of 5: health check: ok" in pushed.stderr
    assert f"port {port} accepting" in pushed.stderr  # no HEALTHCHECK: a TCP connect from the guest
    assert get(port) == "one"
    releases = vm.pymachine("app", "releases", APP, "--format", "json").stdout
    assert '"Version":"v1"' in releases and '"Serving":"*"' in releases
    assert f"127.0.0.1:{port}" in vm.pymachine("app", "list").stdout


def test_a_second_push_switches_without_a_failed_request(app: tuple) -> None:
    """A request loop runs through the whole push; a connection opened to v1 before the switch and finished
    after it is still answered by v1 (the old release is stopped only once its connections are done)."""
    vm, project, port = app
    # v2 has a HEALTHCHECK: the push waits for the engine's `healthy` (v1 had none: its port was probed)
    check = (
        "HEALTHCHECK --interval=60s --start-period=60s --start-interval=1s CMD wget -q -O- 127.0.0.1:$PORT\n"
    )
    project.commit(DOCKERFILE.format(body="two", healthcheck=check), "v2")
    held: socket.socket | None = None
    router = f"app-{APP}-router"
    requests = RequestLoop(lambda: get(port, timeout=RequestLoop.TIMEOUT_S)).start()
    seen, errors = requests.seen, requests.errors
    answered = False
    output: list[str] = []
    push = subprocess.Popen(
        ["git", "push", "pymachine", "main"],
        cwd=project.root,
        env=project.env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert push.stderr is not None
        for line in push.stderr:
            output.append(requests.stamp(line))
            if "stage 3 of 5: health check" in line and held is None and not answered:
                # headers complete (busybox httpd drops a request whose headers are unfinished after 60 s, and
                # under load the health check alone can take that long); the CGI waits for the body's byte
                held = socket.create_connection(("127.0.0.1", port), timeout=60)
                held.sendall(b"POST /cgi-bin/held HTTP/1.0\r\nContent-Length: 1\r\n\r\n")
                # relayed to v1 before the switch: under heavy load it could otherwise still wait in the
                # router's accept queue at the switch, and then rightly go to v2
                wait_for(lambda: f"nc app-{APP}-v1" in vm.docker("top", router).stdout, "held relayed to v1")
            if "stage 4 of 5: switch: ok" in line:
                wait_for(lambda: seen and seen[-1] == "two", "requests answered by v2")
            stopped_early = not answered and "stop old: ok" in line
            assert not stopped_early, "v1 stopped with a connection open:\n" + "".join(output)
            if "connection(s) to app-web-v1 to finish" in line:  # the push waits for the held one
                assert held is not None
                held.sendall(b"x")  # the body: the CGI answers
                answer = read_all(held)
                assert answer.rstrip().endswith(b"one"), answer  # the old release finished it
                held.close()
                held, answered = None, True
        assert push.wait(timeout=600) == 0, "".join(output)
    finally:
        requests.stop()
        push.kill()
        if held is not None:
            held.close()
    assert answered, "".join(output)
    assert errors == [], f"{len(errors)} failed requests during the switch: {errors[:3]}\n{''.join(output)}"
    assert seen.count("one") > 0 and seen[-1] == "two", "the loop saw both releases"
    assert any("no connection to app-web-v1 left" in line for line in output), "".join(output)
    assert any("waiting for app-web-v2: its HEALTHCHECK" in line for line in output), "".join(output)
    # the old release is gone, only the router and v2 run
    names = vm.docker("ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(n for n in names if n.startswith(f"app-{APP}")) == [f"app-{APP}-router", f"app-{APP}-v2"]


def test_a_half_written_route_file_is_skipped(app: tuple) -> None:
    """The switch copies a new route file into the router, which is not atomic: a relay that meets the newest
    file half-written (no `ok` at its end yet) must use the one before, not fail the connection."""
    vm, project, port = app
    # newer than any switch so far; the next switch (rollback) writes a newer, complete one
    partial = Path(vm.env["PYMACHINE_HOME"]).parent / f"{time.time_ns() + 3600 * 10**9:020d}"
    partial.write_text(f"app-{APP}-v9 {port}")  # what a reader sees mid-copy: no `ok`, no newline
    vm.docker("cp", str(partial), f"app-{APP}-router:/route/r/")
    assert [get(port) for _ in range(3)] == ["two"] * 3


def push_fails(project: Project, dockerfile: str) -> str:
    """Commit `dockerfile` and push it: the push must fail; the commit is dropped again (the remote's branch
    never moved). The push's output."""
    project.commit(dockerfile, "bad")
    pushed = project.push(check=False)
    project.git("reset", "-q", "--hard", "HEAD~1")
    assert pushed.returncode != 0 and "[remote rejected] main -> main" in pushed.stderr, pushed.stderr
    return pushed.stderr


def test_a_broken_build_fails_the_push_and_the_old_release_keeps_serving(app: tuple) -> None:
    vm, project, port = app
    output = push_fails(project, "FROM pymachine/busybox\nRUN exit 7\n")
    assert "build failed" in output and "keeps serving v2" in output
    assert get(port) == "two"


def test_a_release_that_never_answers_fails_the_push(app: tuple) -> None:
    vm, project, port = app
    output = push_fails(project, 'FROM pymachine/busybox\nCMD ["sh", "-c", "echo no server here; exit 3"]\n')
    assert "never became healthy" in output and "exited with status 3" in output
    assert "no server here" in output  # the release's log tail tells why
    assert get(port) == "two"
    assert "v3" not in vm.pymachine("app", "releases", APP).stdout  # a failed push makes no release


def test_rollback_to_v1(app: tuple) -> None:
    vm, project, port = app
    vm.pymachine("app", "rollback", APP, "v1")
    assert get(port) == "one"
    info = vm.pymachine("app", "info", APP, "--format", "json").stdout
    assert '"Release": "v1"' in info and '"Serving": "running"' in info


def test_config_set_makes_v3_with_the_new_environment(app: tuple) -> None:
    vm, project, port = app
    out = vm.pymachine("app", "config", "set", APP, "GREETING=hello world")
    assert out.stdout.strip() == f"{APP} v3"
    assert get(port, "/env.txt") == "greeting=hello world"
    assert get(port) == "one"  # the same image as the serving release (v1 after the rollback)
    releases = vm.pymachine("app", "releases", APP).stdout
    assert "config set GREETING" in releases


def test_rm_removes_containers_images_and_the_repository(app: tuple) -> None:
    vm, project, port = app
    repo = Path(vm.env["PYMACHINE_HOME"]) / "apps" / APP / "repo.git"
    assert repo.is_dir()
    vm.pymachine("app", "rm", APP)
    assert not repo.exists()
    assert not [
        n for n in vm.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() if n.startswith("app-")
    ]
    assert f"app-{APP}" not in vm.docker("images", "--format", "{{.Repository}}").stdout
    assert "does not exist" in vm.pymachine("app", "info", APP, check=False).stderr
    assert os.path.exists(project.root)  # the project itself is the user's, untouched
