"""Issue 13 on a booted machine: host folders as bind sources, through the real docker CLI and compose and the
machine's forwarded engine socket, and host edits reaching inotify in a container.

The session machine shares the system temp folder by default, so the test's own temp folders are host paths
the VM sees at the same path. The latencies of the change events are printed (the goal is 1 s; the test
only bounds them with a deadline against hanging)."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import pytest
from support.agent import busybox_tarball
from support.inotify import IN_ATTRIB, events, inotify_watch_binary
from support.machines import StartedMachine

B = "pymachine/busybox"
DEADLINE = 10.0  # seconds a host edit may take to show in the container before the test gives up


def _docker(
    machine: StartedMachine, tmp_path: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = dict(machine.env(), DOCKER_HOST=f"unix://{_socket(machine)}", DOCKER_CONFIG=str(tmp_path / "dc"))
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _socket(machine: StartedMachine) -> Path:
    return machine.home / "m" / machine.name / "docker.sock"


def _compose() -> Path:
    """docker-compose 1.29 from the venv tests/compat/test_compose.py installs (it pins old dependencies)."""
    spec = importlib.util.spec_from_file_location(
        "compat_compose", Path(__file__).parents[1] / "compat" / "test_compose.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_compose()


@pytest.fixture
def ready(machine: StartedMachine, tmp_path: Path) -> StartedMachine:
    deadline = time.monotonic() + 300
    while (v := _docker(machine, tmp_path, "version")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert v.returncode == 0, v.stderr
    if _docker(machine, tmp_path, "image", "inspect", B).returncode != 0:
        loaded = _docker(machine, tmp_path, "load", "-i", str(busybox_tarball()))
        assert loaded.returncode == 0, loaded.stderr
    return machine


def test_a_host_folder_is_seen_at_its_own_path(ready: StartedMachine, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "hello.txt").write_text("from the host\n")
    out = _docker(
        ready,
        tmp_path,
        "run",
        "--rm",
        "-v",
        f"{proj}:/app",
        B,
        "sh",
        "-c",
        "cat /app/hello.txt; echo back > /app/out.txt",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from the host\n"
    assert (proj / "out.txt").read_text() == "back\n"
    # a missing source in a share is made, on the host
    made = tmp_path / "made" / "here"
    out = _docker(ready, tmp_path, "run", "--rm", "-v", f"{made}:/app", B, "true")
    assert out.returncode == 0, out.stderr
    assert made.is_dir()


def test_a_path_outside_the_shares_is_refused_with_the_command(ready: StartedMachine, tmp_path: Path) -> None:
    outside = "/srv/pymachine-not-shared/x"
    out = _docker(ready, tmp_path, "run", "--rm", "-v", f"{outside}:/app", B, "true")
    assert out.returncode != 0
    name = ready.name
    assert (
        f"path {outside} is not shared with machine '{name}': pymachine mount add {name} {outside}"
        in out.stderr
    )
    assert "shared now: " in out.stderr


def test_compose_dot_is_the_project_folder(ready: StartedMachine, tmp_path: Path) -> None:
    compose = _compose()
    project = tmp_path / "cproj"
    project.mkdir()
    (project / "marker.txt").write_text("compose sees the project\n")
    (project / "docker-compose.yml").write_text(
        f'version: "3"\nservices:\n  app:\n    image: {B}\n    volumes: [".:/app"]\n'
        '    command: ["cat", "/app/marker.txt"]\n'
    )
    env = dict(ready.env(), DOCKER_HOST=f"unix://{_socket(ready)}", DOCKER_CONFIG=str(tmp_path / "dc"))
    env.pop("DOCKER_CONTEXT", None)
    run = subprocess.run(
        [str(compose), "-p", "pmshares", "run", "--rm", "app"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    subprocess.run(
        [str(compose), "-p", "pmshares", "down"], cwd=project, env=env, capture_output=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("compose sees the project"), run.stdout


def test_a_host_edit_fires_inotify_in_the_container(
    ready: StartedMachine, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    watcher = inotify_watch_binary()
    if watcher is None:
        pytest.skip("no gcc with a static libc to build the inotify watcher")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "watch").write_bytes(watcher.read_bytes())
    (tools / "watch").chmod(0o755)
    proj = tmp_path / "watched"
    proj.mkdir()
    (proj / "app.py").write_text("v1\n")
    run = _docker(
        ready,
        tmp_path,
        "run",
        "-d",
        "-v",
        f"{proj}:/app",
        "-v",
        f"{tools}:/tools:ro",
        B,
        "/tools/watch",
        "/app",
    )
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()

    def seen(name: str) -> list[int]:
        return [m for m, n in events(_docker(ready, tmp_path, "logs", cid).stdout) if n == name]

    try:
        deadline = time.monotonic() + 120
        while "watching" not in _docker(ready, tmp_path, "logs", cid).stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the host agent schedules its watch once the start's `watch` event reached it
        latencies = []
        for i in range(3):
            before = len(seen("app.py"))
            start = time.monotonic()
            (proj / "app.py").write_text(f"v{i + 2}\n")
            while len(seen("app.py")) == before and time.monotonic() - start < DEADLINE:
                time.sleep(0.05)
            latencies.append(round(time.monotonic() - start, 3))
            assert len(seen("app.py")) > before, f"no event for app.py within {DEADLINE} s"
            time.sleep(0.5)
        assert any(m & IN_ATTRIB for m in seen("app.py"))
        start = time.monotonic()
        (proj / "new.py").write_text("n\n")
        while not seen("new.py") and time.monotonic() - start < DEADLINE:
            time.sleep(0.05)
        latencies.append(round(time.monotonic() - start, 3))
        assert seen("new.py"), f"no event for a created file within {DEADLINE} s"
        # no ping-pong: the count stays put once the edits stop
        settled = len(seen("app.py"))
        time.sleep(2)
        assert len(seen("app.py")) == settled
        content = _docker(ready, tmp_path, "exec", cid, "cat", "/app/app.py").stdout
        assert content == "v4\n"
        with capsys.disabled():
            print(f"\nhost edit → inotify event in the container (upper bounds, polled): {latencies} s")
    finally:
        _docker(ready, tmp_path, "rm", "-f", cid)
