"""A git repository made on the host, and the host's git to run in a busybox container (which has none)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def host_repo(repo: Path, home: Path, files: int = 50) -> None:
    """`repo` with `files` committed files, made by the host's git (skips the test without one)."""
    git = _git()
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(home)}
    for i in range(files):
        (repo / f"f{i}.txt").write_text(f"{i}\n" * i)
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run([git, "-C", str(repo), *args], check=True, env=env)


def status_script(kit: Path, at: str, repo: str) -> str:
    """Copy the host's git and the libraries it links into `kit` (seen as `at` in the container); returns the
    shell line that runs `git status --porcelain` on `repo` there through their loader and prints `rc=N`."""
    git = _git()
    kit.mkdir()
    ldd = subprocess.run(["ldd", git], capture_output=True, text=True, check=True).stdout.splitlines()
    libs = [line.split()[-2] if "=>" in line else line.split()[0] for line in ldd if "/" in line]
    for lib in [git, *libs]:
        shutil.copy(lib, kit / Path(lib).name)
    loader = next(Path(p).name for p in libs if "ld-linux" in p)
    return (
        f"HOME=/tmp GIT_CONFIG_NOSYSTEM=1 {at}/{loader} --library-path {at} {at}/git "
        f"-c safe.directory='*' -C {repo} status --porcelain --untracked-files=all 2>&1; echo rc=$?"
    )


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed on this host")
    return git
