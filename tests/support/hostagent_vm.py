"""One booted machine shared by the host-agent vm tests (tests/vm/test_hostagent*.py, test_run*.py), with the
helpers they use: the docker CLI pointed at its forwarded socket, the pymachine CLI, HTTP probes of ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import SHARED_CACHE
from support.poll import until


@dataclass
class VmMachine:
    name: str
    home: Path
    env: dict[str, str]

    @property
    def docker_socket(self) -> Path:
        return self.home / "m" / self.name / "docker.sock"

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI through the machine's context (`pymachine-NAME`)."""
        proc = subprocess.run(
            ["docker", "--context", f"pymachine-{self.name}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pymachine(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pymachine.app.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pymachine {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                + self.console_tail()
            )
        return proc

    def console_tail(self, lines: int = 40) -> str:
        """The end of the machine's console log: a failed start's reason is there, and the log goes with the
        test's temporary folder."""
        log = self.home / "m" / self.name / "console.log"
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            return f"\n(no console log: {exc})"
        return f"\n--- the last {len(tail)} lines of {log} ---\n" + "\n".join(tail)

    def ssh(self, command: str) -> tuple[int, bytes, bytes]:
        with env_of(self):
            from pymachine.hostvm import ssh

            return ssh.run(self.name, command)

    def remove_all_containers(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)


@contextlib.contextmanager
def env_of(machine: VmMachine) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("PYMACHINE_HOME", "PYMACHINE_CACHE", "DOCKER_CONFIG")}
    os.environ.update({k: machine.env[k] for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def http_status(port: int, path: str = "/", timeout: float = 30) -> int:
    """The HTTP status a GET gets from 127.0.0.1:port (any status proves the path end to end)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on `port`. A reset is not a refusal: the handshake completed into a listener's backlog
    and the listener closed right after (it was still open), which a poll for the close meets under load."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return False
    except ConnectionResetError:
        return False
    except ConnectionRefusedError:
        return True


def wait_for(predicate, what: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    return until(predicate, timeout, what, every=0.1)


@contextlib.contextmanager
def booted_machine(base: Path, name: str, **create: object) -> Iterator[VmMachine]:
    """Create and start machine `name` (direct-QEMU driver) in `base`/home with busybox loaded; `create` goes
    to `machines.create` (e.g. home_mount=False, driver="libvirt"). Deleted (forced) on exit."""
    from support.agent import busybox_tarball

    driver = str(create.pop("driver", "qemu"))
    if driver == "libvirt":
        from support.machines import ensure_libvirtd

        ensure_libvirtd()

    env = dict(os.environ)
    env.update(
        PYMACHINE_HOME=str(base / "home"),
        PYMACHINE_CACHE=str(SHARED_CACHE),
        DOCKER_CONFIG=str(base / "docker-config"),
    )
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "PYMACHINE_IDLE_SUSPEND_S"):
        env.pop(key, None)
    machine = VmMachine(name, base / "home", env)
    with env_of(machine):
        from pymachine.hostvm import machines

        machines.create(name, driver=driver, progress=lambda m: print(m, file=sys.stderr), **create)  # type: ignore[arg-type]
        try:
            machines.start(name, lambda m: print(m, file=sys.stderr))
            machine.docker("load", "-i", str(busybox_tarball()))
            yield machine
        finally:
            with contextlib.suppress(Exception):
                machine.remove_all_containers()
            machines.delete(name, force=True)


@pytest.fixture(scope="session")
def hostagent_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmMachine]:
    """Create and start machine `ha` (direct-QEMU driver) in its own PYMACHINE_HOME; load busybox into it."""
    with booted_machine(tmp_path_factory.mktemp("ha"), "ha") as machine:
        yield machine


@pytest.fixture
def ha_vm(hostagent_machine: VmMachine) -> Iterator[VmMachine]:
    """The shared machine `ha`, this process's environment pointed at it; its containers go afterwards."""
    with env_of(hostagent_machine):
        yield hostagent_machine
    hostagent_machine.remove_all_containers()
