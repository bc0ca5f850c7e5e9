"""The host agent against a real OpenSSH sshd on 127.0.0.1 (standing in for the guest's sshd): transport and
pinning, direct-streamlocal, the engine socket, published ports with acks, clash errors, UDP, and healing
after sshd restarts. The guest side's port bookkeeping is the guest agent's own PortBroker
(support/hostagent_guest.py); the vm tier repeats the important cases with the real guest agent."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from support.hostagent_guest import FakeGuestProtocol
from support.hostagent_sshd import LocalSshd, free_port, unavailable
from support.hostagent_vm import refused

from pymachine.hostvm import paths
from pymachine.hostvm.hostagent import control, launcher, streamlocal
from pymachine.hostvm.hostagent.daemon import Agent
from pymachine.hostvm.hostagent.events import read_events
from pymachine.hostvm.hostagent.transport import HostKeyMismatch, open_transport

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
HANG_GUARD = 15.0  # seconds: a bound against hanging, not a speed claim (speed is in bench/forward.py)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=HANG_GUARD)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(HANG_GUARD)
        self.sock.connect(str(self.path))


def call(sock: Path, method: str, path: str, body: object = None) -> tuple[int, object]:
    conn = UnixHTTP(sock)
    conn.request(method, path, json.dumps(body) if body is not None else None)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data


def wait_for(predicate, what: str, timeout: float = HANG_GUARD):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class GuestTcp:
    """A TCP service 'in the guest' (here: on this host's loopback, reached through sshd's direct-tcpip)."""

    def __init__(self, reply: bytes = b"hello from the guest\n", port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    @classmethod
    def at(cls, port: int) -> GuestTcp:
        return cls(port=port)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.reply)


def fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as s:
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LocalSshd]:
    server = LocalSshd(tmp_path / "sshd").start()
    yield server
    server.stop()


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[FakeGuestProtocol]:
    peer = FakeGuestProtocol(tmp_path / "guest.sock").start()
    yield peer
    peer.stop()


@pytest.fixture
def agent(tmp_path: Path, sshd: LocalSshd, guest: FakeGuestProtocol) -> Iterator[Agent]:
    a = Agent("t", sshd.connect, machine_dir=tmp_path, guest_socket=str(guest.path), probe_interval=0.5)
    a.start()
    wait_for(lambda: a.status()["state"] == "ready", "the agent to be ready")
    yield a
    a.stop()


def publish(agent: Agent, container: str, *ports: tuple[str, str, int, int]) -> tuple[int, object]:
    """Publish as a container start does, through the agent's own engine socket."""
    return call(agent.docker_socket, "POST", "/test/publish", {"container": container, "ports": list(ports)})


# -- transport and channels ------------------------------------------------------------------------
def test_a_server_with_another_host_key_is_refused(sshd: LocalSshd) -> None:
    stranger = sshd.client_key  # any key but the server's own
    with pytest.raises(HostKeyMismatch):
        open_transport("127.0.0.1", sshd.port, "root", sshd.client_key, stranger)
    t = open_transport("127.0.0.1", sshd.port, "root", sshd.client_key, sshd.host_key)
    assert t.is_authenticated()
    t.close()


@pytest.mark.parametrize("mode", ["direct", "exec"])
def test_streamlocal_carries_data_and_half_close(tmp_path: Path, sshd: LocalSshd, mode: str) -> None:
    path = tmp_path / "echo.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def echo_until_eof() -> None:
        conn, _ = server.accept()
        got = b""
        while data := conn.recv(65536):
            got += data
        conn.sendall(b"got %d bytes" % len(got))  # only possible if our half-close reached it
        conn.close()

    threading.Thread(target=echo_until_eof, daemon=True).start()
    t = sshd.connect()
    try:
        chan = streamlocal.Opener(str(path), mode).open(t)
        chan.sendall(b"x" * 300_000)
        chan.shutdown_write()
        answer = b""
        while data := chan.recv(4096):
            answer += data
        assert answer == b"got 300000 bytes"
    finally:
        t.close()


def test_missing_guest_socket_is_an_error_not_a_fallback(tmp_path: Path, sshd: LocalSshd) -> None:
    t = sshd.connect()
    try:
        with pytest.raises(paramiko.ChannelException):
            streamlocal.Opener(str(tmp_path / "absent.sock")).open(t)
    finally:
        t.close()


# -- engine socket and ports -----------------------------------------------------------------------
def test_engine_socket_is_private_and_speaks_http(agent: Agent) -> None:
    assert agent.docker_socket.stat().st_mode & 0o777 == 0o600
    assert call(agent.docker_socket, "GET", "/_ping") == (200, b"OK")


def test_port_is_live_the_moment_the_start_returns(agent: Agent) -> None:
    service = GuestTcp()
    for i in range(5):
        host_port = free_port()
        status, _ = publish(agent, f"c{i}", ("tcp", "127.0.0.1", host_port, service.port))
        assert status == 201
        # no sleep, no retry: the ack came after the listener was bound
        assert fetch(host_port) == b"hello from the guest\n"
    kinds = [(e.type, e.get("action")) for e in read_events(agent.events.path)[0]]
    assert kinds.count(("forward", "opened")) == 5


def test_a_young_port_waits_for_the_container_to_listen(agent: Agent) -> None:
    """`docker run -d` returns before the container's server listens: the first connection must not fail."""
    guest_port, host_port = free_port(), free_port()
    assert publish(agent, "slow", ("tcp", "127.0.0.1", host_port, guest_port))[0] == 201
    threading.Timer(0.5, lambda: setattr(agent, "_late", GuestTcp.at(guest_port))).start()
    assert fetch(host_port) == b"hello from the guest\n"


def test_a_taken_host_port_fails_the_start_with_its_name(agent: Agent) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    status, body = publish(agent, "c1", ("tcp", "127.0.0.1", port, 1234))
    assert status == 500
    assert body == {"message": f"host port 127.0.0.1:{port} is already in use"}
    failed = [e for e in read_events(agent.events.path)[0] if e.get("action") == "failed"]
    assert failed and failed[-1].get("host_port") == port
    assert agent.forwarder.snapshot() == []
    blocker.close()


def test_unpublishing_closes_the_listener(agent: Agent) -> None:
    service = GuestTcp()
    host_port = free_port()
    assert publish(agent, "c1", ("tcp", "127.0.0.1", host_port, service.port))[0] == 201
    assert call(agent.docker_socket, "POST", "/test/withdraw", {"container": "c1"})[0] == 200
    # its own predicate raised ConnectionResetError under load (a connect that reached the backlog just
    # before the close): the shared one counts that as still open
    wait_for(lambda: refused(host_port), "the listener to close")


def test_udp_port_round_trip(agent: Agent) -> None:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            data, addr = echo.recvfrom(65535)
            echo.sendto(b"echo:" + data, addr)

    threading.Thread(target=serve, daemon=True).start()
    host_port = free_port()
    assert publish(agent, "u1", ("udp", "127.0.0.1", host_port, echo.getsockname()[1]))[0] == 201
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(HANG_GUARD)
    for word in (b"one", b"two"):
        client.sendto(word, ("127.0.0.1", host_port))
        assert client.recvfrom(65535)[0] == b"echo:" + word


# -- healing ---------------------------------------------------------------------------------------
def test_sshd_restart_heals_engine_socket_and_ports(agent: Agent, sshd: LocalSshd) -> None:
    service = GuestTcp()
    host_port = free_port()
    assert publish(agent, "c1", ("tcp", "127.0.0.1", host_port, service.port))[0] == 201
    sshd.restart()
    # the first requests after the restart may find the link still down: they wait for it, not fail
    assert call(agent.docker_socket, "GET", "/_ping") == (200, b"OK")
    assert fetch(host_port) == b"hello from the guest\n"
    wait_for(lambda: agent.status()["state"] == "ready", "ready again")
    st = agent.status()
    assert st["link"]["reconnects"] >= 1
    assert [f["health"] for f in st["forwards"]] == ["ok"]
    links = [e.get("state") for e in read_events(agent.events.path)[0] if e.type == "link"]
    assert links[:3] == ["up", "down", "up"]


def test_ports_unpublished_while_the_link_was_down_close_after_resync(
    agent: Agent, sshd: LocalSshd, guest: FakeGuestProtocol
) -> None:
    service = GuestTcp()
    keep, gone = free_port(), free_port()
    assert publish(agent, "keep", ("tcp", "127.0.0.1", keep, service.port))[0] == 201
    assert publish(agent, "gone", ("tcp", "127.0.0.1", gone, service.port))[0] == 201
    sshd.stop()
    wait_for(lambda: agent.status()["link"]["state"] == "down", "the link to drop")
    guest.broker.withdraw("gone")  # the container stopped while nobody was listening
    sshd.start()
    wait_for(lambda: [f["host_port"] for f in agent.forwarder.snapshot()] == [keep], "the resync")
    assert fetch(keep) == b"hello from the guest\n"


def test_drop_link_through_the_control_socket_heals(agent: Agent) -> None:
    before = agent.status()["link"]["reconnects"]
    assert control.call(agent.control_path, "drop-link") == {"ok": True}
    wait_for(lambda: agent.status()["link"]["reconnects"] > before, "a reconnect")
    assert call(agent.docker_socket, "GET", "/_ping") == (200, b"OK")
    health = control.call(agent.control_path, "health")
    assert health["link"] == "up"


def test_clock_resync_sets_the_guest_clock(agent: Agent) -> None:
    # The local "guest" is this host: the skew is ~0, so a forced resync proves the command path works.
    answer = control.call(agent.control_path, "resync-clock")
    assert answer["ok"] and answer["clock"]["resyncs"] >= 1 and abs(answer["clock"]["skew"]) < 5


# -- the detached process --------------------------------------------------------------------------
def _machine_files_for(name: str, sshd: LocalSshd) -> None:
    """What machines.create would have written, pointing at the local sshd."""
    mp = paths.machine(name)
    mp.dir.mkdir(parents=True)
    mp.ssh_key.write_bytes(sshd.client_key_path.read_bytes())
    os.chmod(mp.ssh_key, 0o600)
    kind, blob = (sshd.root / "host_key.pub").read_text().split()[:2]
    mp.known_hosts.write_text(f"pymachine-{name} {kind} {blob}\n")
    mp.state.write_text(json.dumps({"ssh_port": sshd.port}))


def test_kill_9_of_the_agent_is_repaired_by_ensure_running(
    pymachine_home: Path, sshd: LocalSshd, guest: FakeGuestProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_GUEST_SOCKET", str(guest.path))
    monkeypatch.setenv("DOCKER_CONFIG", str(pymachine_home / "docker-config"))  # the context lands here
    _machine_files_for("t", sshd)
    mp = paths.machine("t")
    service = GuestTcp()
    host_port = free_port()
    try:
        st = launcher.ensure_running("t")
        first = st["pid"]
        assert st["state"] == "ready" and launcher.agent_pid("t") == first
        assert launcher.ensure_running("t")["pid"] == first  # idempotent: no second agent
        assert (
            call(
                mp.docker_socket,
                "POST",
                "/test/publish",
                {"container": "c1", "ports": [["tcp", "127.0.0.1", host_port, service.port]]},
            )[0]
            == 201
        )
        os.kill(first, signal.SIGKILL)
        # its supervisor starts it again: no command needed (ensure_running then finds it)
        wait_for(lambda: launcher.agent_pid("t") not in (None, first), "the supervisor to start a new agent")
        st = launcher.ensure_running("t")
        assert st["pid"] != first and st["state"] == "ready"
        # the new agent's subscription got the resync: the forward is back without anyone publishing again
        wait_for(lambda: any(f["host_port"] == host_port for f in launcher.status("t")["forwards"]), "resync")
        assert fetch(host_port) == b"hello from the guest\n"
        assert call(mp.docker_socket, "GET", "/_ping") == (200, b"OK")
    finally:
        launcher.stop("t")
    assert launcher.agent_pid("t") is None
    assert not mp.docker_socket.exists() and not mp.control_socket.exists()
    if shutil.which("docker"):
        ctx = subprocess.run(["docker", "context", "inspect", "pymachine-t"], capture_output=True, text=True)
        assert json.loads(ctx.stdout)[0]["Endpoints"]["docker"]["Host"] == f"unix://{mp.docker_socket}"
        launcher.remove_docker_context("t")
        gone = subprocess.run(["docker", "context", "inspect", "pymachine-t"], capture_output=True)
        assert gone.returncode != 0
