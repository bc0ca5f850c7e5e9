"""The engine socket while the guest agent restarts (issue 16, a guest disk filled by a container): against
a real OpenSSH sshd on 127.0.0.1 standing in for the guest's, with support/hostagent_guest.py's guest
protocol on the "guest" socket. A client that connects while no guest agent listens waits for the next one
and gets its answer, however many other channel opens are refused at the same moment: paramiko keeps one
refusal reason per transport and hands it to whichever open asks first, so a refused open could read as a
broken link and its docker client got EOF (`docker rm -f` after the guest agent restarted on a full disk)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from support.agent import UnixHTTPConnection
from support.hostagent_guest import FakeGuestProtocol
from support.hostagent_sshd import LocalSshd, unavailable
from support.poll import until

from pymachine.hostvm.hostagent import streamlocal
from pymachine.hostvm.hostagent.daemon import Agent

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
HANG_GUARD = 60.0  # seconds: a bound against hanging, not a speed claim
CLIENTS = 12


def ping(sock: Path) -> str:
    """`GET /_ping` through the engine socket: "200 OK", or what the client saw instead."""
    conn = UnixHTTPConnection(str(sock), HANG_GUARD)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        return f"{resp.status} {resp.read().decode(errors='replace')}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    """One sshd for this module's tests (each opens its own transport to it)."""
    server = LocalSshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()


def test_concurrent_refusals_each_keep_their_own_reason(tmp_path: Path, sshd: LocalSshd) -> None:
    """Many opens to a missing socket at once: each is refused as 2 (connect failed), the reason a caller
    retries on, never as a reasonless SSHException."""
    t = sshd.connect()
    seen: list[str] = []
    lock = threading.Lock()

    def open_missing() -> None:
        for _ in range(5):
            try:
                streamlocal.open_direct(t, str(tmp_path / "absent.sock")).close()
                outcome = "opened"
            except paramiko.ChannelException as exc:
                outcome = f"refused {exc.code}"
            except paramiko.SSHException as exc:
                outcome = f"SSHException: {exc}"
            with lock:
                seen.append(outcome)

    try:
        threads = [threading.Thread(target=open_missing) for _ in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(HANG_GUARD)
        assert t.is_active()
    finally:
        t.close()
    assert seen == ["refused 2"] * 80, sorted(set(seen))


def test_clients_that_connect_while_the_guest_agent_restarts_get_its_answer(
    tmp_path: Path, sshd: LocalSshd
) -> None:
    path = tmp_path / "guest.sock"
    guest = FakeGuestProtocol(path).start()
    agent = Agent("t", sshd.connect, machine_dir=tmp_path, guest_socket=str(path), probe_interval=0.5)
    agent.start()
    try:
        until(lambda: agent.status()["state"] == "ready", HANG_GUARD, "the agent to be ready")
        assert ping(agent.docker_socket) == "200 OK"
        guest.stop()  # the guest agent is gone: its socket refuses (as after a kill -9), then a new one comes
        answers: list[str] = []
        clients = [
            threading.Thread(target=lambda: answers.append(ping(agent.docker_socket))) for _ in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        until(lambda: agent.engine.connections >= CLIENTS + 1, HANG_GUARD, "the clients to connect")
        time.sleep(2)  # the fault lasts: their channel opens (and the event stream's) are refused meanwhile
        guest = FakeGuestProtocol(path).start()  # the restarted agent
        for client in clients:
            client.join(HANG_GUARD)
        assert answers == ["200 OK"] * CLIENTS
    finally:
        agent.stop()
        guest.stop()
