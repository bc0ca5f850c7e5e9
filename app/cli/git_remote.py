"""`git-remote-pymachine`: the git remote helper behind `git remote add pymachine pymachine::APP`
(docs/deploy.md, "The remote").

git runs it for a remote whose URL is `pymachine::APP` (gitremote-helpers(7)), with GIT_DIR set to the
pusher's repository, and talks to it on stdin/stdout. It offers one capability, `push`: there is no
repository at the other end to receive objects. The helper reads the pushed commit straight from the
pusher's repository (`git archive`) and deploys it with the same code as every pymachine command: the build
context goes to the app's machine over the engine socket the host agent forwards through the machine's SSH
link (its pinned host key), on this computer or on another host (`--driver ssh`, a remote libvirt). So a
plain `git push pymachine main` works from any terminal where `pymachine` works, with nothing to configure.

The helper's stderr is the pusher's terminal: the build and the stages stream there as they happen. Each
pushed ref is answered `ok` (git then moves `pymachine/main`) or `error REF REASON` (git prints `[remote
rejected]` and exits 1). `list` advertises the serving release's commit as `refs/heads/main` when the
pusher's repository has it, so pushing what already serves says "Everything up-to-date" and changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from pymachine.app.cli import render
from pymachine.hostvm.deploy import model, release
from pymachine.hostvm.errors import PymachineError, UsageError

Deploy = Callable[[str, Path, str, render.Plain], object]


class Helper:
    """One conversation with git (tests drive it with pipes and a stand-in `deploy`)."""

    def __init__(
        self, app: str, git_dir: Path, out: TextIO, err: TextIO, deploy: Deploy = release.deploy
    ) -> None:
        # git gives GIT_DIR relative to the helper's working directory (".git"): absolute for the engine work
        self.app, self.git_dir, self.out, self.err, self.deploy = app, git_dir.resolve(), out, err, deploy

    def run(self, commands: TextIO) -> int:
        batch: list[str] = []
        for raw in commands:
            line = raw.rstrip("\n")
            if batch and not line.startswith("push "):
                self._answer(self._push(batch))  # a batch of push commands ends with a blank line
                batch = []
                continue
            if line == "capabilities":
                self._answer(["push"])
            elif line in ("list", "list for-push"):
                self._answer(self._list())
            elif line.startswith("push "):
                batch.append(line[len("push ") :])
            elif line == "":
                return 0  # git is done
            else:
                print(f"git-remote-pymachine: unsupported command {line!r}", file=self.err)
                return 1
        return 0

    def _answer(self, lines: list[str]) -> None:
        self.out.write("".join(f"{line}\n" for line in lines) + "\n")
        self.out.flush()

    def _list(self) -> list[str]:
        serving = model.load(self.app).current_release
        if (
            serving
            and serving.commit
            and self._git("cat-file", "-e", f"{serving.commit}^{{commit}}") is not None
        ):
            return [f"{serving.commit} refs/heads/main"]
        return []  # nothing deployed, or a commit this repository lacks: every push is a new branch

    def _push(self, specs: list[str]) -> list[str]:
        refs = [spec.lstrip("+").partition(":") for spec in specs]
        if len(refs) > 1:
            reason = f"a push deploys one branch, this one updates {len(refs)} refs; push only main"
            return [f"error {dst} {reason}" for _src, _, dst in refs]
        src, _, dst = refs[0]
        try:
            if dst not in model.DEPLOY_BRANCHES:
                raise UsageError(
                    f"only main or master is deployed, not {dst}",
                    hint="push your branch as main: git push pymachine HEAD:main",
                )
            if not src:
                raise UsageError(
                    f"{dst} cannot be deleted here", hint=f"remove the app: pymachine app rm {self.app}"
                )
            commit = self._git("rev-parse", "--verify", "--quiet", f"{src}^{{commit}}")
            if not commit:
                raise UsageError(f"{src} is not a commit in this repository")
            self.deploy(self.app, self.git_dir, commit, render.Plain(self.err))
        except PymachineError as exc:
            print(exc.render(), file=self.err, flush=True)
            return [f"error {dst} {exc.message.splitlines()[0]}"]
        return [f"ok {dst}"]

    def _git(self, *args: str) -> str | None:
        """Its output, or None when git says no."""
        done = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(
            "usage: git-remote-pymachine REMOTE APP (git runs it for a remote URL pymachine::APP)\n"
            "hint: pymachine app create APP prints the `git remote add` line",
            file=sys.stderr,
        )
        return 2
    app = args[1].removeprefix("pymachine://")
    try:
        model.load(app)  # "app 'x' does not exist" before git asks anything
    except PymachineError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    helper = Helper(app, Path(os.environ.get("GIT_DIR") or ".git"), sys.stdout, sys.stderr)
    return helper.run(sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
