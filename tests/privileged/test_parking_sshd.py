"""The host agent parked across a saving stop (hostagent/parking.py), against a real sshd standing in for the
guest: `park` runs the quiesce script over the open link and closes it; meanwhile the engine socket answers at
once with the engine's JSON error (no 30 s wait for a link that cannot come) and a published port's listener
stays bound; `unpark` connects at once and the engine and the port work again. A failing script parks
nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_guest import FakeGuestProtocol
from support.hostagent_sshd import LocalSshd, free_port, unavailable

from pymachine.hostvm.hostagent import control
from pymachine.hostvm.hostagent.daemon import Agent

from . import test_hostagent_sshd as base
from .test_hostagent_sshd import HANG_GUARD, GuestTcp, call, fetch, publish, wait_for

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
# the same real sshd and fake guest agent as the host agent's other tests
sshd, guest = base.sshd, base.guest


def started(tmp_path: Path, sshd: LocalSshd, guest: FakeGuestProtocol) -> Agent:
    a = Agent("t", sshd.connect, machine_dir=tmp_path, guest_socket=str(guest.path), probe_interval=0.5)
    a.start()
    return a


@pytest.fixture
def agent(tmp_path: Path, sshd: LocalSshd, guest: FakeGuestProtocol) -> Iterator[Agent]:
    a = started(tmp_path, sshd, guest)
    wait_for(lambda: a.status()["state"] == "ready", "the agent to be ready")
    yield a
    a.stop()


def test_parked_agent_answers_at_once_and_unpark_brings_everything_back(agent: Agent, tmp_path: Path) -> None:
    service = GuestTcp()
    host_port = free_port()
    assert publish(agent, "c1", ("tcp", "127.0.0.1", host_port, service.port))[0] == 201
    marker = tmp_path / "quiesced"
    answer = control.call(
        agent.control_path, "park", timeout=HANG_GUARD, script=f"echo flushed; touch {marker}", timeout_s=10
    )
    assert answer["ok"] and answer["status"] == 0 and answer["out"] == "flushed\n"
    assert marker.exists()  # the script ran over the agent's link, before it closed
    assert agent.status()["state"] == "saved" and agent.status()["link"]["state"] == "down"
    status, body = call(agent.docker_socket, "GET", "/_ping")
    assert status == 503 and "is stopped (its state is saved)" in body["message"]  # type: ignore[index]
    with socket.create_connection(("127.0.0.1", host_port), timeout=HANG_GUARD) as s:  # still bound
        assert s.recv(64) == b""  # closed at once: nothing to carry it to
    assert control.call(agent.control_path, "unpark")["was_parked"] is True
    wait_for(lambda: agent.status()["state"] == "ready", "ready after the unpark")
    assert call(agent.docker_socket, "GET", "/_ping") == (200, b"OK")
    assert fetch(host_port) == b"hello from the guest\n"


def test_a_failing_quiesce_script_parks_nothing(agent: Agent) -> None:
    answer = control.call(
        agent.control_path, "park", timeout=HANG_GUARD, script="echo busy >&2; exit 3", timeout_s=10
    )
    assert answer["ok"] is False and answer["status"] == 3 and answer["err"] == "busy\n"
    assert agent.status()["state"] == "ready"
    assert call(agent.docker_socket, "GET", "/_ping") == (200, b"OK")


def test_an_agent_started_while_its_machine_is_saved_waits_parked(
    tmp_path: Path, sshd: LocalSshd, guest: FakeGuestProtocol
) -> None:
    (tmp_path / "saved.json").write_text("{}")
    a = started(tmp_path, sshd, guest)
    try:
        assert a.status()["state"] == "saved"
        assert call(a.docker_socket, "GET", "/_ping")[0] == 503
        assert a.link.connected_at == 0  # no connection attempt made it
        control.call(a.control_path, "unpark")
        wait_for(lambda: a.status()["state"] == "ready", "ready after the unpark")
    finally:
        a.stop()
