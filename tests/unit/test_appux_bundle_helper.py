"""`git-remote-pymachine` in a PyInstaller bundle: the bundle's one entry point runs git's remote helper when
it runs under that name (argv[0]), and `app create` finds a helper that sits beside pymachine's own executable
but not on PATH (a bundle or venv whose `pymachine` alone was linked into PATH) and says which folder to add,
instead of only offering the host-repository remote. tests/privileged/test_package_bundle.py builds the real
bundle and pushes through it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from support.machine_files import write_machine

from pymachine.app.cli import main as cli
from pymachine.hostvm.deploy import repo

ENTRY = Path(__file__).resolve().parents[2] / "packaging" / "pyinstaller" / "entry.py"


def _entry():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("bundle_entry", ENTRY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv0", ["/opt/pymachine/git-remote-pymachine", "git-remote-pymachine.exe"])
def test_the_bundle_entry_runs_the_remote_helper_by_its_name(argv0: str, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", [argv0])  # git runs it as `git-remote-pymachine REMOTE URL`: none here
    assert _entry().main() == 2
    out, err = capsys.readouterr()
    assert err.startswith("usage: git-remote-pymachine REMOTE APP") and out == ""


def test_the_bundle_entry_is_the_cli_under_its_own_name(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["/opt/pymachine/pymachine"])
    assert _entry().main() == 2  # no verb: the CLI's help
    assert capsys.readouterr().out.startswith("usage: pymachine ")


def _bundle(tmp_path: Path) -> tuple[Path, Path]:
    """A bundle folder with `pymachine` and `git-remote-pymachine`; a PATH folder linking `pymachine` only."""
    bundle, bin_dir = tmp_path / "opt" / "pymachine", tmp_path / "bin"
    bundle.mkdir(parents=True)
    bin_dir.mkdir()
    for name in ("pymachine", "git-remote-pymachine"):
        (bundle / name).write_text("#!/bin/sh\n")
        (bundle / name).chmod(0o755)
    (bin_dir / "pymachine").symlink_to(bundle / "pymachine")
    return bundle, bin_dir


def test_a_helper_beside_the_linked_executable_is_found(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bundle, bin_dir = _bundle(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "pymachine"))  # frozen: the executable is pymachine
    assert repo.find_helper(argv0=str(bin_dir / "pymachine")) == (None, str(bundle))
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")  # a venv's console script, linked into PATH
    assert repo.find_helper(argv0=str(bin_dir / "pymachine")) == (None, str(bundle))
    monkeypatch.setenv("PATH", f"{bundle}{os.pathsep}{bin_dir}{os.pathsep}/usr/bin")
    assert repo.find_helper() == (str(bundle / "git-remote-pymachine"), "")


def test_nowhere_is_nowhere(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    assert repo.find_helper(argv0=str(tmp_path / "pymachine")) == (None, "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_create_names_the_folder_to_put_on_path(
    pymachine_home, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    write_machine("dev")
    bundle, bin_dir = _bundle(tmp_path)
    git = shutil.which("git")
    assert git is not None
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(git)}")  # git, and no other helper
    monkeypatch.setattr(sys, "executable", str(bin_dir / "pymachine"))
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "pymachine")])
    assert cli.main(["app", "create", "web", "--machine", "dev", "--port", str(_free_port())]) == 0
    out = capsys.readouterr().out
    assert "  git remote add pymachine pymachine::web\n" in out
    assert f"it is in {bundle}, not on PATH" in out
    assert f'  export PATH={bundle}:"$PATH"\n' in out
    assert "put the folder of" not in out  # the vague advice is for a helper that is nowhere
