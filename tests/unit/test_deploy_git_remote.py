"""`git-remote-pymachine`'s side of the gitremote-helpers protocol, driven by the real git CLI: `git push`
to a `pymachine::APP` remote reaches the helper (from PATH, as in a plain terminal), which deploys the pushed
commit read from the pusher's own repository; refusals (another branch, a deletion, a failed deploy) reach
the pusher as `[remote rejected]` with the reason. The deploy itself is a stand-in here (tests/vm has the
real one): it records what it was asked and fails on demand."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymachine.app.cli import git_remote
from pymachine.hostvm.deploy import model
from pymachine.hostvm.deploy.model import App, Release
from pymachine.hostvm.errors import PymachineError

STAND_IN = """\
import json, os, sys
from pathlib import Path
from pymachine.app.cli import git_remote
from pymachine.hostvm.errors import PymachineError

def deploy(app, git_dir, commit, say):
    say("building " + commit[:7])
    Path(os.environ["DEPLOYS"]).open("a").write(json.dumps([app, str(git_dir), commit]) + "\\n")
    if os.environ.get("FAIL"):
        raise PymachineError("build failed: step 2 exited 7; app 'web' keeps serving v1", hint="fix it")

helper = git_remote.Helper(sys.argv[2], Path(os.environ["GIT_DIR"]), sys.stdout, sys.stderr, deploy)
sys.exit(helper.run(sys.stdin))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    monkeypatch.setenv("PYMACHINE_HOME", str(home))
    model.save(App("web", "dev", 8080))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "git-remote-pymachine"
    helper.write_text(f"#!{sys.executable}\n{STAND_IN}")
    helper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DEPLOYS": str(tmp_path / "deploys"),
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    root = tmp_path / "project"
    root.mkdir()
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "pymachine", "pymachine::web"]):
        git(root, env, *args)
    (root / "Dockerfile").write_text("FROM pymachine/busybox\n")
    git(root, env, "add", "-A")
    git(root, env, "commit", "-qm", "one")
    return root, env


def git(root: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and done.returncode:
        raise AssertionError(f"git {args}: {done.stderr}")
    return done


def deploys(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["DEPLOYS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_git_push_deploys_the_commit_from_the_pushers_own_repository(project: tuple) -> None:
    root, env = project
    pushed = git(root, env, "push", "pymachine", "main")
    head = git(root, env, "rev-parse", "HEAD").stdout.strip()
    assert deploys(env) == [["web", str(root / ".git"), head]]
    assert f"building {head[:7]}" in pushed.stderr  # the deploy's output reaches the pusher's terminal
    assert "* [new branch]      main -> main" in pushed.stderr
    assert git(root, env, "rev-parse", "pymachine/main").stdout.strip() == head  # git moved the tracking ref


def test_a_failed_deploy_rejects_the_push_with_the_reason(project: tuple) -> None:
    root, env = project
    git(root, env, "push", "pymachine", "main")
    one = git(root, env, "rev-parse", "HEAD").stdout.strip()
    (root / "Dockerfile").write_text("FROM pymachine/busybox\nRUN exit 7\n")
    git(root, env, "commit", "-qam", "two")
    pushed = git(root, env | {"FAIL": "1"}, "push", "pymachine", "main", check=False)
    assert pushed.returncode == 1
    assert "! [remote rejected] main -> main (build failed: step 2 exited 7; app 'web' keeps serving v1)" in (
        pushed.stderr
    ), pushed.stderr
    assert "hint: fix it" in pushed.stderr
    assert git(root, env, "rev-parse", "pymachine/main").stdout.strip() == one  # not moved


@pytest.mark.parametrize(
    "refspec, words",
    [
        ("main:feature", "only main or master is deployed, not refs/heads/feature"),
        (":main", "cannot be deleted here"),
    ],
)
def test_pushes_that_do_not_deploy_are_refused(project: tuple, refspec: str, words: str) -> None:
    root, env = project
    head = git(
        root, env, "rev-parse", "HEAD"
    ).stdout.strip()  # serving: main is advertised, so it can be deleted
    model.save(App("web", "dev", 8080).with_release(Release(1, "sha256:1", {}, 1.0, "push", head)))
    pushed = git(root, env, "push", "pymachine", refspec, check=False)
    assert pushed.returncode == 1 and "[remote rejected]" in pushed.stderr and words in pushed.stderr
    assert deploys(env) == []


def test_the_serving_commit_is_advertised_so_pushing_it_again_changes_nothing(
    project: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, env = project
    head = git(root, env, "rev-parse", "HEAD").stdout.strip()
    model.save(App("web", "dev", 8080).with_release(Release(1, "sha256:1", {}, 1.0, "push", head)))
    pushed = git(root, env, "push", "pymachine", "main")
    assert "Everything up-to-date" in pushed.stderr and deploys(env) == []
    # a commit this repository does not have is not advertised (git would refuse the push as "fetch first")
    model.save(App("web", "dev", 8080).with_release(Release(1, "sha256:1", {}, 1.0, "push", "d" * 40)))
    out = io.StringIO()
    git_remote.Helper("web", root / ".git", out, io.StringIO()).run(io.StringIO("list for-push\n\n"))
    assert out.getvalue() == "\n"


def test_an_app_that_does_not_exist_is_named_before_git_asks_anything(
    project: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    assert git_remote.main(["pymachine", "nope"]) == 1
    assert "app 'nope' does not exist" in capsys.readouterr().err


def test_several_refs_in_one_push_are_refused_together(project: tuple) -> None:
    out = io.StringIO()
    calls: list[str] = []

    def deploy(*args: object) -> None:
        calls.append("deploy")
        raise PymachineError("not reached")

    root, _env = project
    helper = git_remote.Helper("web", root / ".git", out, io.StringIO(), deploy)
    helper.run(
        io.StringIO("push refs/heads/main:refs/heads/main\npush refs/heads/main:refs/heads/master\n\n\n")
    )
    assert out.getvalue().splitlines()[:2] == [
        "error refs/heads/main a push deploys one branch, this one updates 2 refs; push only main",
        "error refs/heads/master a push deploys one branch, this one updates 2 refs; push only main",
    ]
    assert calls == []
