"""The PyInstaller one-folder bundle (packaging/pyinstaller/build.sh): its two executables run without any
Python installed for them: the CLI answers `version` and `doctor`, the app renders its views offscreen, and
the host agent's `-m` entry (how pymachine starts it) reaches the agent's own code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.pristine_root import REPO

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="builds with the system python3"),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    build = subprocess.run(
        [str(REPO / "packaging/pyinstaller/build.sh"), str(out)], capture_output=True, text=True, timeout=1500
    )
    assert build.returncode == 0, build.stderr[-4000:]
    return out / "pymachine"


def _run(bundle: Path, home: Path, exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing of this checkout or of a venv may help the bundle: a clean PATH, no PYTHONPATH, an own home.
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "PYMACHINE_HOME": str(home / "pm"),
        "QT_QPA_PLATFORM": "offscreen",
        "LANG": "C.UTF-8",
    }
    argv = [str(bundle / exe), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=home, timeout=300)


def test_cli_runs_from_the_bundle(bundle: Path, tmp_path: Path) -> None:
    run = _run(bundle, tmp_path, "pymachine", "version")
    assert run.returncode == 0, run.stderr
    assert "0.1.0" in run.stdout
    doctor = _run(bundle, tmp_path, "pymachine", "doctor")
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    assert "image:" in doctor.stdout  # the recipe hash was computed from the files the bundle carries


def test_gui_renders_from_the_bundle(bundle: Path, tmp_path: Path) -> None:
    for exe, args in (("pymachine", ["gui", "--screenshot"]), ("pymachine-gui", ["--screenshot"])):
        shots = tmp_path / exe
        run = _run(bundle, tmp_path, exe, *args, str(shots))
        assert run.returncode == 0, run.stderr
        names = [p.name for p in shots.iterdir()]
        assert "machines.png" in names and all(n.endswith(".png") for n in names)


def test_host_agent_entry_runs_the_agent_module(bundle: Path, tmp_path: Path) -> None:
    # launcher.py starts the agent as `sys.executable -m pymachine.hostvm.hostagent NAME`; in the bundle
    # sys.executable is the CLI itself. Without a name the agent's own module answers with its usage.
    run = _run(bundle, tmp_path, "pymachine", "-m", "pymachine.hostvm.hostagent")
    assert run.returncode == 2
    assert "usage: python -m pymachine.hostvm.hostagent NAME" in run.stderr


def test_git_runs_the_bundles_remote_helper(bundle: Path, tmp_path: Path) -> None:
    """`app create` from the bundle: git finds `git-remote-pymachine` beside `pymachine` and runs it (`list`
    of an app with nothing deployed); with only `pymachine` linked into PATH, it names the folder to add."""
    import json
    import socket

    from pymachine.hostvm import config as cfgmod

    machine = tmp_path / "pm" / "m" / "dev"  # a created machine's settings; app create needs no VM
    machine.mkdir(parents=True)
    cfg = cfgmod.MachineConfig(
        name="dev", cpus=1, memory=cfgmod.DEFAULT_MEMORY, disk=cfgmod.DEFAULT_DISK, driver="qemu"
    )
    (machine / "config.json").write_text(json.dumps(cfg.to_json()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    linked = tmp_path / "bin"
    linked.mkdir()
    (linked / "pymachine").symlink_to(bundle / "pymachine")
    made = _run(linked, tmp_path, "pymachine", "app", "create", "web", "--machine", "dev", "--port", port)
    assert made.returncode == 0, made.stderr
    assert f'export PATH={bundle}:"$PATH"' in made.stdout, made.stdout

    env = {
        "PATH": f"{bundle}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "PYMACHINE_HOME": str(tmp_path / "pm"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    project = tmp_path / "project"
    project.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["remote", "add", "pymachine", "pymachine::web"],
        ["ls-remote", "pymachine"],
    ):
        done = subprocess.run(
            ["git", *args], cwd=project, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (args, done.stderr)
    missing = subprocess.run(
        ["git", "ls-remote", "pymachine::nosuch"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and "app 'nosuch' does not exist" in missing.stderr, missing.stderr
