"""The remotes of an app: `pymachine::NAME` (git-remote-pymachine, the one `app create` prints first), and the
bare repository on the host with its pre-receive hook (for a git without the helper on its PATH).

Why on the host and not in the VM: the build runs through the engine API like every other build (the guest
image needs no git, a remote or paused machine is woken by the same path as `pymachine build`), and the remote
is a plain path, so `git push` needs no SSH key, config or known_hosts entry at all. The hook is
pre-receive, not post-receive: git waits for it before it moves the branch, so a failed build or an unhealthy
release rejects the push (exit status 1, `[remote rejected]`) and its output (the build, the health check)
reaches the pusher's terminal as git's `remote:` lines.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from .. import paths, proc

HOOK_MARK = "# pymachine app hook"


def hook_script(name: str, python: str = sys.executable, environ: dict[str, str] | None = None) -> str:
    """The pre-receive hook: this interpreter's `pymachine app receive NAME`, with this PYMACHINE_HOME (the
    push may come from a shell where it is unset or different)."""
    env = os.environ if environ is None else environ
    lines = ["#!/bin/sh", HOOK_MARK + f" for '{name}' (written by pymachine app create)"]
    lines.append(f"PYMACHINE_HOME={shlex.quote(str(paths.home()))}; export PYMACHINE_HOME")
    if env.get("PYMACHINE_CACHE"):
        lines.append(f"PYMACHINE_CACHE={shlex.quote(env['PYMACHINE_CACHE'])}; export PYMACHINE_CACHE")
    lines.append(f"exec {shlex.quote(python)} -m pymachine.app.cli app receive {shlex.quote(name)}")
    return "\n".join(lines) + "\n"


def create(name: str) -> Path:
    """A bare repository for app `name` with the hook installed; its path is the remote's URL."""
    repo = paths.app(name).repo
    proc.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(repo)], timeout=60)
    hook = repo / "hooks" / "pre-receive"
    tmp = hook.with_suffix(".tmp")
    tmp.write_text(hook_script(name))
    tmp.chmod(0o755)
    os.replace(tmp, hook)
    return repo


HELPER = "git-remote-pymachine"


def find_helper(argv0: str | None = None) -> tuple[str | None, str]:
    """(the helper git will run: found on PATH; else None, the folder beside this pymachine that holds one).

    git looks for `git-remote-pymachine` on PATH only. A bundle (PyInstaller) or a venv ships it beside
    pymachine's own executable, and a person who linked only `pymachine` into PATH has it there without git
    seeing it: then the folder to add is named ("" when there is none)."""
    on_path = shutil.which(HELPER)
    if on_path:
        return on_path, ""
    # the bundle's executable (or the venv's python), through its links, and the script run (a console
    # script linked into PATH: /usr/local/bin/pymachine -> /opt/pymachine/bin/pymachine)
    script = sys.argv[0] if argv0 is None else argv0
    places = [
        sys.executable,
        os.path.realpath(sys.executable),
        *([os.path.realpath(script)] if script else []),
    ]
    for folder in dict.fromkeys(os.path.dirname(p) for p in places):
        if folder and shutil.which(HELPER, path=folder):
            return None, folder
    return None, ""


def remote_url(name: str) -> str:
    """The remote git reaches through `git-remote-pymachine` (app/cli/git_remote.py)."""
    return f"pymachine::{name}"


def remote_commands(name: str, remote: str = "pymachine") -> list[str]:
    """What a person pastes into their project to deploy it."""
    return [f"git remote add {remote} {remote_url(name)}", f"git push {remote} main"]


def local_remote_command(name: str, remote: str = "pymachine") -> str:
    """The other remote: this computer's repository of the app, with its pre-receive hook (no helper)."""
    return f"git remote add {remote} {shlex.quote(str(paths.app(name).repo))}"


def archive(repo: Path, commit: str, subdir: str = "") -> bytes:
    """The tree of `commit` (or of its folder `subdir`) as a tar (the build context). In the hook, git's
    environment points at the quarantined objects of the push, so the commit is readable before the branch
    moves."""
    tree = f"{commit}:{subdir}" if subdir else commit
    return proc.run(["git", "--git-dir", str(repo), "archive", "--format=tar", tree], timeout=300).stdout


def read_file(repo: Path, commit: str, path: str) -> str:
    return proc.run(
        ["git", "--git-dir", str(repo), "cat-file", "blob", f"{commit}:{path}"], timeout=60
    ).stdout.decode(errors="replace")


def has_file(repo: Path, commit: str, path: str) -> bool:
    found = proc.run(["git", "--git-dir", str(repo), "cat-file", "-e", f"{commit}:{path}"], check=False)
    return found.returncode == 0
