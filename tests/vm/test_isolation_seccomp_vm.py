"""Issue 12, point 2 on the VM's own kernel: io_uring and AF_VSOCK (the guest has a vsock device) are refused
in a default container, through the real docker CLI and the machine's forwarded engine socket; --privileged
runs without a filter (which the host's privileged tier cannot start: its bounding set is not full)."""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path

from support.agent import busybox_tarball
from support.machines import StartedMachine
from support.static_c import unix_http_binary

PROBE_SRC = Path(__file__).resolve().parents[1] / "support" / "seccomp_probe.c"
B = "pymachine/busybox"


def _docker(machine: StartedMachine, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        machine.env(),
        DOCKER_HOST=f"unix://{machine.home / 'm' / machine.name / 'docker.sock'}",
        DOCKER_CONFIG=str(tmp_path / "docker-config"),
    )
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=600)


def _run_static(
    machine: StartedMachine, tmp_path: Path, binary: Path, opts: list[str], args: list[str]
) -> str:
    """A static test binary copied into a created container as /<its role> (`args[0]`) and run attached:
    its output. busybox has neither the probe's syscalls nor a unix-socket HTTP client."""
    created = _docker(machine, tmp_path, "create", *opts, B, *args)
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    try:
        copied = _docker(machine, tmp_path, "cp", str(binary), f"{cid}:{args[0]}")
        assert copied.returncode == 0, copied.stderr
        out = _docker(machine, tmp_path, "start", "-a", cid)
        assert out.returncode == 0, out.stderr
        return out.stdout
    finally:
        _docker(machine, tmp_path, "rm", "-f", cid)


def _engine_with_busybox(machine: StartedMachine, tmp_path: Path) -> None:
    deadline = time.monotonic() + 300
    while (ready := _docker(machine, tmp_path, "version")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert ready.returncode == 0, ready.stderr
    loaded = _docker(machine, tmp_path, "load", "-i", str(busybox_tarball()))
    assert loaded.returncode == 0, loaded.stderr


def _run_probe(machine: StartedMachine, tmp_path: Path, probe: Path, *opts: str) -> dict[str, str]:
    names = ["io_uring_setup", "vsock", "vsock_high", "keyctl", "inet", "personality0"]
    out = _run_static(machine, tmp_path, probe, list(opts), ["/probe", *names])
    return dict(line.split() for line in out.splitlines())


def test_io_uring_and_vsock_are_refused_on_the_vms_kernel(machine: StartedMachine, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(probe), str(PROBE_SRC)], check=True)
    _engine_with_busybox(machine, tmp_path)

    eperm = f"E{errno.EPERM}"
    got = _run_probe(machine, tmp_path, probe)
    assert got == {
        "io_uring_setup": eperm,
        "vsock": eperm,
        "vsock_high": eperm,
        "keyctl": eperm,
        "inet": "OK",
        "personality0": "OK",
    }, got
    # The same calls without the filter reach the guest's kernel: the profile is what refused them.
    free = _run_probe(machine, tmp_path, probe, "--security-opt", "seccomp=unconfined")
    assert free["io_uring_setup"] != eperm and free["vsock"] != eperm and free["keyctl"] == "OK", free

    status = _docker(
        machine, tmp_path, "run", "--rm", "--privileged", B, "grep", "Seccomp:", "/proc/self/status"
    )
    assert status.returncode == 0 and status.stdout.split() == ["Seccomp:", "0"], (
        status.stdout,
        status.stderr,
    )
    status = _docker(machine, tmp_path, "run", "--rm", B, "grep", "Seccomp:", "/proc/self/status")
    assert status.stdout.split() == ["Seccomp:", "2"], (status.stdout, status.stderr)


def test_a_container_given_the_engine_socket_gets_only_dockers_api(
    machine: StartedMachine, tmp_path: Path
) -> None:
    """In a machine (shares on): `-v /var/run/docker.sock:...` binds the agent's containers.sock, which serves
    the Docker API and refuses the host agent's protocol (more in tests/privileged/test_shares_agent.py)."""
    client = unix_http_binary()
    assert client is not None, "gcc with a static libc is needed for tests/support/unix_http.c"
    _engine_with_busybox(machine, tmp_path)

    def ask(method: str, path: str, body: str = "") -> str:
        sock = ["-v", "/var/run/docker.sock:/var/run/docker.sock"]
        args = ["/unix_http", "/var/run/docker.sock", method, path, *([body] if body else [])]
        return _run_static(machine, tmp_path, client, sock, args)

    assert ask("GET", "/v1.44/version").startswith("HTTP/1.1 200")
    for method, path, body in (
        ("GET", "/pymachine/v1/info", ""),
        ("PUT", "/pymachine/v1/shares", '{"shares": [{"path": "/"}]}'),
    ):
        reply = ask(method, path, body)
        assert reply.startswith("HTTP/1.1 403") and "VM's own processes only" in reply, reply
    outside = _docker(machine, tmp_path, "run", "--rm", "-v", "/etc:/x", B, "true")
    assert outside.returncode != 0 and "is not shared with machine" in outside.stderr, outside.stderr
