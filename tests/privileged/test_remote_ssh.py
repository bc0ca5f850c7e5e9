"""`create --driver ssh`: a machine on an existing Linux host, here a network namespace on this machine with a
real OpenSSH sshd on its address (support/remote_sshd.py). The guest agent then runs on this kernel as root,
in that namespace's network: its published ports are out of this machine's reach except through the SSH link
(and a port published on the remote host's network interfaces is refused by the guard create installs), so a
port answering on our localhost proves the forward.

The real CLI (`python -m pymachine.app.cli`), the real docker CLI against the forwarded socket, the real agent
under its supervisor; every test ends with the host as it found it (the last test deletes the machine and
checks that nothing create installed is left).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.agent import busybox_tarball
from support.hostagent_sshd import free_port
from support.machines import cli, home_env, new_home
from support.poll import until
from support.remote_sshd import NetnsHost, netns_host, unavailable

from pymachine.hostvm.errors import UsageError

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
DOCKER = shutil.which("docker")


def fingerprint(pub: Path) -> str:
    return subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def installed(name: str) -> list[str]:
    """What create --driver ssh puts on the host (remote_install.Layout) that exists now."""
    wanted = [
        f"/opt/pymachine-remote/{name}",
        f"/var/lib/pymachine-remote/{name}",
        f"/run/pymachine-remote/{name}",
        f"/var/log/pymachine-{name}.log",
        f"/etc/init.d/pymachine-{name}",
        f"/etc/systemd/system/pymachine-{name}.service",
    ]
    return [p for p in wanted if os.path.lexists(p)]


def agent_pids(host: NetnsHost, name: str) -> list[int]:
    found = []
    for pid in host.pids():
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "pymachine_agent serve" in cmd and f"/run/pymachine-remote/{name}/" in cmd:
                found.append(pid)
    return found


@dataclass
class Remote:
    host: NetnsHost
    home: Path
    name: str
    created: subprocess.CompletedProcess[str]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)

    def facade(self, verb: str, *args: object, **kw: object) -> object:
        """`machines.VERB(name, ...)` here: the CLI's own call, without a Python start per step."""
        from pymachine.hostvm import machines

        with home_env(self.home):
            return getattr(machines, verb)(self.name, *args, **kw)

    def state(self) -> str:
        return self.facade("get").state  # type: ignore[attr-defined]

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.home}/m/{self.name}/docker.sock"}
        env["DOCKER_CONFIG"] = str(self.home / "docker-config")
        done = subprocess.run(
            [DOCKER or "docker", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert not check or done.returncode == 0, done.stderr
        return done


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    home = new_home()
    name = f"remote-{os.getpid() % 100000}"
    with netns_host(tmp_path_factory.mktemp("rhost")) as host:
        try:
            created = cli(home, "create", name, "--driver", "ssh", "--host", host.target,
                          "--ssh-key", str(host.client_key_path), "--start")  # fmt: skip
            assert created.returncode == 0, created.stderr + created.stdout
            yield Remote(host, home, name, created)
        finally:
            if (home / "m" / name).exists():
                with contextlib.suppress(Exception):
                    Remote(host, home, name, created).facade("delete", force=True)
            shutil.rmtree(home, ignore_errors=True)


def test_create_pins_the_key_it_showed_and_reports_the_hosts_limits(remote: Remote) -> None:
    shown = fingerprint(remote.host.root / "host_key.pub")
    out = remote.created.stdout + remote.created.stderr
    assert f"trusting {remote.host.address}'s host key on first use: ssh-ed25519 {shown}" in out
    pinned = (remote.home / "m" / remote.name / "known_hosts").read_text()
    assert (remote.host.root / "host_key.pub").read_text().split()[1] in pinned
    # this machine has no systemd as PID 1 and no cron: the init.d script, and the output says so
    assert "init.d script" in out and os.path.exists(f"/etc/init.d/pymachine-{remote.name}")
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        assert "cgroup v1 (or hybrid) host: containers run without memory/CPU/pids limits" in out
    assert f"machine '{remote.name}' is running" in out
    m = remote.facade("get")
    assert (m.uri, m.driver, m.state) == (f"ssh://{remote.host.target}", "ssh", "running")  # type: ignore[attr-defined]
    # this computer's folders do not reach another host: refused, not silently empty there
    with pytest.raises(UsageError, match="runs on another host"):
        remote.facade("mount_add", str(remote.home))


@pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")
def test_socket_ports_ps_logs_exec_over_the_link(remote: Remote) -> None:
    with home_env(remote.home):
        tarball = busybox_tarball()
    remote.docker("load", "-i", str(tarball))
    port = free_port()
    # (sh as PID 1 ends on TERM at once: `stop` below does not wait out the 10 s grace)
    remote.docker("run", "-d", "--name", "web", "-p", f"{port}:80", "pymachine/busybox:latest", "sh", "-c",
                  "trap 'exit 0' TERM; mkdir -p /www; echo hello-from-the-remote-host > /www/index.html; "
                  "echo up; httpd -p 80 -h /www; while :; do sleep 1; done")  # fmt: skip
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
        assert answer.read() == b"hello-from-the-remote-host\n"
    # published for this computer only: the remote host's own network address does not serve it
    with pytest.raises(OSError), socket.create_connection((remote.host.address, port), timeout=3):
        pass
    m = f"--machine={remote.name}"
    assert "web" in remote.cli(m, "ps").stdout
    assert until(lambda: "up" in remote.cli(m, "logs", "web").stdout, 30, "the container's log")
    assert remote.cli(m, "exec", "web", "cat", "/www/index.html").stdout == "hello-from-the-remote-host\n"
    assert remote.state() == "running"


def test_the_supervisor_restarts_a_killed_agent(remote: Remote) -> None:
    (old,) = until(lambda: agent_pids(remote.host, remote.name), 30, "the agent")
    os.kill(old, signal.SIGKILL)
    new = until(lambda: [p for p in agent_pids(remote.host, remote.name) if p != old], 60, "a new agent")
    assert new
    until(lambda: remote.docker("ps", check=False).returncode == 0, 60, "the engine through the socket again")


def test_stop_then_an_impostor_is_refused_then_start(remote: Remote) -> None:
    """`stop` ends the containers and the agent (never the host); a host that comes back with another key is
    refused and nothing runs on it; the right host starts again."""
    remote.facade("stop")
    assert not agent_pids(remote.host, remote.name)
    assert remote.state() == "stopped"
    other = remote.host.root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    remote.host.stop_sshd()
    remote.host.start_sshd(host_key=other)
    try:
        refused = remote.cli("start", remote.name)
        assert refused.returncode != 0
        assert "host key" in refused.stderr, refused.stderr
        assert not agent_pids(remote.host, remote.name)  # nothing ran on the impostor
    finally:
        remote.host.stop_sshd()
        remote.host.start_sshd()
    remote.facade("start")
    assert remote.state() == "running"
    assert "Exited" in remote.docker("ps", "-a", "--filter", "name=web").stdout


def test_delete_removes_what_create_installed(remote: Remote) -> None:
    assert installed(remote.name)
    deleted = remote.cli("delete", "--force", remote.name)
    assert deleted.returncode == 0, deleted.stderr
    assert installed(remote.name) == []
    assert not agent_pids(remote.host, remote.name)
    assert "pymachine0" not in remote.host.ns("ip", "link").stdout
    assert "pymachine" not in remote.host.ns("nft", "list", "tables").stdout
    assert not (remote.home / "m" / remote.name).exists()


# -- create refusals: each on a host of its own --------------------------------------------------------------
def test_a_host_key_other_than_given_refuses_create(tmp_path: Path) -> None:
    from pymachine.hostvm import machines, remote_host
    from pymachine.hostvm.errors import PymachineError

    home, name = new_home(), f"remote-k{os.getpid() % 10000}"
    other = tmp_path / "not_the_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    said: list[str] = []
    try:
        with netns_host(tmp_path / "h") as host, home_env(home):
            key = str(host.client_key_path)
            with pytest.raises(PymachineError, match="not the one given with --host-key"):
                remote_host.create(name, host.target, key, f"{other}.pub", lambda m: said.append(str(m)))
            assert not (home / "m" / name).exists() and installed(name) == []
            right = fingerprint(host.root / "host_key.pub")
            remote_host.create(name, host.target, key, right, lambda m: said.append(str(m)))
            assert any("matches --host-key" in m for m in said)
            machines.delete(name)
            assert installed(name) == []
    finally:
        with home_env(home), contextlib.suppress(Exception):
            machines.delete(name, force=True)  # a failed assert above must not leave the host changed
        shutil.rmtree(home, ignore_errors=True)


def test_every_missing_host_feature_is_reported_at_once(tmp_path: Path) -> None:
    """The host's python3 says 3.9, its kernel lists no overlay, and nft is gone: one message names all three,
    and nothing is installed."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 3.9\n")
    (fake / "python3").chmod(0o755)
    filesystems = "".join(
        line + "\n" for line in Path("/proc/filesystems").read_text().splitlines() if "overlay" not in line
    )
    (fake / "filesystems").write_text(filesystems)
    (fake / "nothing").write_text("")
    setup = " && ".join(
        f"mount --bind {fake}/{mine} {theirs}"
        for mine, theirs in (
            ("python3", os.path.realpath("/usr/bin/python3")),
            ("filesystems", "/proc/filesystems"),
            ("nothing", shutil.which("nft")),
        )
    )
    home, name = new_home(), f"remote-f{os.getpid() % 10000}"
    try:
        with netns_host(tmp_path / "h", setup=setup) as host:
            done = cli(home, "create", name, "--driver", "ssh", "--host", host.target, "--ssh-key",
                       str(host.client_key_path))  # fmt: skip
            assert done.returncode != 0
            message = done.stderr
            assert "python3 is 3.9, the agent needs 3.11 or newer" in message
            assert "no overlayfs" in message
            assert "nft is missing" in message
            assert message.count("this host cannot run the pymachine agent") == 1
            assert not (home / "m" / name).exists() and installed(name) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
