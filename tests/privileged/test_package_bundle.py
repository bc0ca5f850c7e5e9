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
