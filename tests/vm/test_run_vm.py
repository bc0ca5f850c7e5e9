"""`pymachine run/ps/logs/exec/stop/rm/images` end to end on a real machine, through the host agent."""

from __future__ import annotations

import json

import pytest
from support.hostagent_vm import VmMachine, env_of, free_port, http_status, refused, wait_for


@pytest.fixture
def vm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    machine: VmMachine = request.getfixturevalue("hostagent_machine")
    with env_of(machine):
        yield machine
    machine.remove_all_containers()


def test_run_detached_with_a_port_then_ps_logs_exec_stop_rm(vm: VmMachine) -> None:
    port = free_port()
    cid = vm.pymachine(
        "run",
        "--machine",
        vm.name,
        "-d",
        "-p",
        f"{port}:80",
        "--name",
        "web",
        "-e",
        "GREETING=hi",
        "pymachine/busybox",
        "sh",
        "-c",
        "echo started; exec httpd -f -p 80 -h /bin",
    ).stdout.strip()
    assert len(cid) == 64
    assert http_status(port) == 404  # the port answers as soon as run returned

    rows = _json_lines(vm.pymachine("ps", "--machine", vm.name, "--format", "json").stdout)
    web = next(r for r in rows if r["Names"] == "web")
    assert web["ID"] == cid[:12] and web["State"] == "running" and f":{port}->80/tcp" in web["Ports"]
    table = vm.pymachine("ps", "--machine", vm.name).stdout
    assert table.splitlines()[0].startswith("CONTAINER ID") and "web" in table

    assert "started" in vm.pymachine("logs", "--machine", vm.name, "web").stdout
    out = vm.pymachine("exec", "--machine", vm.name, "web", "sh", "-c", "echo $GREETING; exit 4", check=False)
    assert (out.returncode, out.stdout.strip()) == (4, "hi")

    vm.pymachine("container", "stop", "--machine", vm.name, "-t", "1", "web")
    wait_for(lambda: refused(port), "the listener to close after stop")
    rows = _json_lines(vm.pymachine("ps", "--machine", vm.name, "-a", "--format", "json").stdout)
    assert next(r for r in rows if r["Names"] == "web")["State"] == "exited"
    vm.pymachine("rm", "--machine", vm.name, "web")
    rows = _json_lines(vm.pymachine("ps", "--machine", vm.name, "-a", "--format", "json").stdout)
    assert not [r for r in rows if r["Names"] == "web"]


def test_stdin_reaches_the_container_and_its_end_is_passed_on(vm: VmMachine) -> None:
    """`-i` hijacks the connection through the forwarded socket; closing our stdin must reach the process
    (half-close carried over SSH), or `cat` would never exit."""
    import subprocess

    proc = subprocess.run(
        [
            *vm_cli(vm),
            "run",
            "--machine",
            vm.name,
            "--rm",
            "-i",
            "pymachine/busybox",
            "sh",
            "-c",
            "cat; echo done",
        ],
        input="line one\nline two\n",
        capture_output=True,
        text=True,
        env=vm.env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "line one\nline two\ndone\n"
    vm.docker("run", "-d", "--name", "sleeper", "pymachine/busybox", "sleep", "600")
    proc = subprocess.run(
        [*vm_cli(vm), "exec", "--machine", vm.name, "-i", "sleeper", "wc", "-l"],
        input="a\nb\nc\n",
        capture_output=True,
        text=True,
        env=vm.env,
        timeout=300,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "3")


def vm_cli(vm: VmMachine) -> list[str]:
    import sys

    return [sys.executable, "-m", "pymachine.app.cli"]


def test_run_attached_passes_output_streams_and_exit_code(vm: VmMachine) -> None:
    proc = vm.pymachine(
        "run",
        "--machine",
        vm.name,
        "--rm",
        "pymachine/busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stdout.strip() == "out"
    assert "err" in proc.stderr
    rows = _json_lines(vm.pymachine("ps", "--machine", vm.name, "-a", "--format", "json").stdout)
    assert rows == []  # --rm removed it


def test_run_with_a_taken_port_says_which(vm: VmMachine) -> None:
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        proc = vm.pymachine(
            "run",
            "--machine",
            vm.name,
            "-d",
            "-p",
            f"{port}:80",
            "pymachine/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            check=False,
        )
        assert proc.returncode == 125  # the container could not start: docker run's own failure
        assert f"host port 127.0.0.1:{port} is already in use" in proc.stderr
        assert proc.stderr.startswith("error: ")
        assert "hint: publish another host port (-p OTHER:CONTAINER)" in proc.stderr  # and how to go on
    finally:
        blocker.close()


def test_images_lists_the_loaded_busybox(vm: VmMachine) -> None:
    rows = _json_lines(vm.pymachine("images", "--machine", vm.name, "--format", "json").stdout)
    assert any(r["Repository"] == "pymachine/busybox" and r["Tag"] == "latest" for r in rows)


def test_unknown_image_has_a_hint(vm: VmMachine) -> None:
    proc = vm.pymachine("run", "--machine", vm.name, "no-such/image:1", check=False)
    assert proc.returncode != 0
    assert "hint:" in proc.stderr


def test_readme_first_command_loads_the_builtin_image_and_answers(vm: VmMachine) -> None:
    """README: `pymachine run -d -p 8080:80 --name web pymachine/busybox httpd -f -p 80 -h /www && curl …`,
    starting from an engine without the image (it is built on the host and loaded, no registry)."""
    from pymachine.hostvm.container_images import CONTAINER_RECIPES

    vm.docker("rmi", "-f", "pymachine/busybox", check=False)
    assert "pymachine/busybox" not in vm.docker("images", "--format", "{{.Repository}}").stdout
    port = 8080 if not port_taken(8080) else free_port()
    proc = vm.pymachine(
        "run",
        "--machine",
        vm.name,
        "-d",
        "-p",
        f"{port}:80",
        "--name",
        "web",
        "pymachine/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    )
    assert "loading pymachine/busybox" in proc.stderr
    import urllib.request

    with urllib.request.urlopen(f"http://localhost:{port}", timeout=30) as resp:
        body = resp.read()
    assert body == (CONTAINER_RECIPES / "busybox" / "rootfs" / "www" / "index.html").read_bytes()


def port_taken(port: int) -> bool:
    """True when `port` cannot be used for the test: something on this shared host already listens there."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _json_lines(text: str) -> list[dict]:
    """`--format json`: one JSON object per line, as docker prints it."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
