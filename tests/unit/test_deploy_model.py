"""Pure parts of `pymachine app` (hostvm/deploy): which pushes deploy, names and inputs refused with a hint,
the state file's round trip, the hook script's quoting, the router's relay script."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from pymachine.hostvm import paths
from pymachine.hostvm.deploy import model, release, repo, router
from pymachine.hostvm.deploy.model import App, Release
from pymachine.hostvm.errors import NotFoundError, PymachineError, UsageError

A, B = "a" * 40, "b" * 40


def test_a_push_of_main_or_master_deploys_its_new_commit() -> None:
    assert model.pushed_commit([f"{A} {B} refs/heads/main"]).new == B
    assert model.pushed_commit([f"{model.ZERO} {B} refs/heads/master"]).new == B


@pytest.mark.parametrize(
    "lines, words",
    [
        ([], "named no branch"),
        ([f"{A} {B} refs/heads/main", f"{A} {B} refs/heads/master"], "one branch"),
        ([f"{A} {B} refs/heads/feature"], "only main or master"),
        ([f"{A} {B} refs/tags/v1"], "only main or master"),
        ([f"{A} {model.ZERO} refs/heads/main"], "cannot be deleted"),
    ],
)
def test_pushes_that_do_not_deploy_are_refused_with_the_reason(lines: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        model.pushed_commit(lines)
    assert caught.value.hint or words == "named no branch"


@pytest.mark.parametrize("name", ["web", "a", "my-app-2"])
def test_good_app_names(name: str) -> None:
    assert model.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Web", "-x", "x-", "a_b", "../etc", "a b", "x" * 33, "1app"])
def test_bad_app_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid app name"):
        model.check_name(name)


@pytest.mark.parametrize("port", [0, 80, 1023, 65536])
def test_bad_ports_are_refused(port: int) -> None:
    with pytest.raises(UsageError):
        model.check_port(port)


def test_versions_and_assignments() -> None:
    assert model.parse_version("v3") == model.parse_version("3") == 3
    for bad in ("v0", "x", "v", "-1"):
        with pytest.raises(UsageError):
            model.parse_version(bad)
    assert model.parse_assignments(["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    with pytest.raises(UsageError, match="'1A=x', 'NOEQUALS'"):
        model.parse_assignments(["OK=1", "1A=x", "NOEQUALS"])


def test_releases_and_the_state_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path))
    app = App(name="web", machine="dev", port=8080, config={"A": "1"})
    assert app.next_version == 1 and app.current_release is None
    r1 = Release(1, "sha256:1", {"A": "1"}, 1.0, "push 1234567", B)
    app = app.with_release(r1).with_release(Release(2, "sha256:2", {}, 2.0, "config unset A"))
    assert app.current == 2 and app.next_version == 3
    assert (app.container(2), app.tag(2), app.router) == ("app-web-v2", "app-web:v2", "app-web-router")
    model.save(app)
    assert model.load("web") == app
    assert model.names() == ["web"]
    with pytest.raises(NotFoundError, match="no release v7"):
        app.release(7)
    with pytest.raises(NotFoundError, match="does not exist"):
        model.load("other")


def test_the_hook_runs_this_interpreter_with_this_home_whatever_the_paths_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "it's a $HOME; `x`"
    monkeypatch.setenv("PYMACHINE_HOME", str(home))
    script = repo.hook_script("web", python="/opt/py thon/bin/python3", environ={})
    assert script.startswith("#!/bin/sh\n")
    # run the script's assignments and print what exec would get, without running pymachine
    probe = script.replace("exec ", "printf '%s\\n' ", 1)
    out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["/opt/py thon/bin/python3", "-m", "pymachine.app.cli", "app", "receive", "web"]
    env = subprocess.run(
        ["sh", "-c", script.rsplit("exec ", 1)[0] + 'printf %s "$PYMACHINE_HOME"'],
        capture_output=True,
        text=True,
    )
    assert env.stdout == str(paths.home()) == str(home)
    assert "PYMACHINE_CACHE" not in script
    assert "PYMACHINE_CACHE=/c" in repo.hook_script("web", environ={"PYMACHINE_CACHE": "/c"})


def test_the_remote_command_is_one_a_shell_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "with space"))
    add, push = repo.remote_commands("web")
    assert shlex.split(add) == ["git", "remote", "add", "pymachine", "pymachine::web"]
    assert push == "git push pymachine main"
    local = repo.local_remote_command("web")
    assert shlex.split(local) == ["git", "remote", "add", "pymachine", str(paths.app("web").repo)]


def _relay(tmp_path: Path, files: dict[str, str]) -> str:
    """The router's relay script with its folder moved to `tmp_path` and `nc` replaced by an echo."""
    routes = tmp_path / "r"
    routes.mkdir()
    for name, text in files.items():
        (routes / name).write_text(text)
    script = (
        router.RELAY.replace("\\n", "\n").replace("/route/r", str(routes)).replace("exec nc", "exec echo")
    )
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else f"exit {proc.returncode}"


def test_the_relay_takes_the_newest_complete_route(tmp_path: Path) -> None:
    assert _relay(tmp_path, {"01": "app-w-v1 80 ok\n", "02": "app-w-v2 80 ok\n"}) == "app-w-v2 80"


def test_the_relay_skips_a_half_written_route(tmp_path: Path) -> None:
    files = {"01": "app-w-v1 80 ok\n", "02": "app-w-v2 80 ok\n", "03": "app-w-v3 8", "04": ""}
    assert _relay(tmp_path, files) == "app-w-v2 80"


def test_the_relay_without_any_route_fails_the_connection(tmp_path: Path) -> None:
    assert _relay(tmp_path, {"01": "app-w-v1 80"}) == "exit 1"


class _Image:
    def __init__(self, healthcheck: dict | None) -> None:
        self.attrs = {"Config": {"Healthcheck": healthcheck} if healthcheck else {}}


class _Engine:
    """Stands in for docker-py's client and container: the states a release goes through, one per reload."""

    def __init__(self, states: list[dict], healthcheck: dict | None) -> None:
        self.states, self.image, self.name = list(states), _Image(healthcheck), "app-web-v2"
        self.images = self
        self.attrs: dict = {}

    def get(self, _ref: str) -> _Image:
        return self.image

    def reload(self) -> None:
        self.attrs = {"State": self.states.pop(0) if len(self.states) > 1 else self.states[0]}

    def logs(self, tail: int) -> bytes:
        return b"listening on 8080\n"


CHECK = {"Test": ["CMD-SHELL", "wget -q -O- localhost:8080"]}
APP = App(name="web", machine="m", port=8080, current=1, health_timeout=30)
RELEASE = Release(2, "sha256:2", {}, 0.0, "push")


def test_a_healthcheck_that_turns_healthy_ends_the_wait() -> None:
    running = {"Status": "running", "Health": {"Status": "starting"}}
    engine = _Engine([running, running, {"Status": "running", "Health": {"Status": "healthy"}}], CHECK)
    release.wait_ready(engine, APP, engine, RELEASE, lambda _e: None)
    assert engine.states[0]["Health"]["Status"] == "healthy"


def test_an_unhealthy_release_fails_with_the_checks_output_and_its_log() -> None:
    log = [{"ExitCode": 1, "Output": "wget: can't connect to remote host: Connection refused"}]
    engine = _Engine([{"Status": "running", "Health": {"Status": "unhealthy", "Log": log}}], CHECK)
    with pytest.raises(PymachineError) as caught:
        release.wait_ready(engine, APP, engine, RELEASE, lambda _e: None)
    text = caught.value.message
    assert "v2 of app 'web' never became healthy" in text and "Connection refused" in text
    assert "keeps serving v1" in text and "listening on 8080" in text


def test_a_release_that_exits_fails_even_with_a_healthcheck() -> None:
    engine = _Engine([{"Status": "exited", "ExitCode": 3}], CHECK)
    with pytest.raises(PymachineError, match="exited with status 3"):
        release.wait_ready(engine, APP, engine, RELEASE, lambda _e: None)
