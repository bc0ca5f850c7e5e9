"""A booting guest's clock check waits for the guest agent's hello (issue 14, cold boot faster).

The host agent checks the guest clock at every link-up with an exec (a shell and `date` in the guest). On a
cold boot the link comes up while the guest agent is still importing, and that exec took guest CPU from it;
the booted guest's clock comes from the emulated RTC, so the check now runs once the agent said hello. Here
the "guest" is a real sshd on this host and the guest agent's protocol peer starts only after the link is up,
as on a boot: the clock event must follow the "ready" state, never precede it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_guest import FakeGuestProtocol
from support.hostagent_sshd import LocalSshd, unavailable

from pymachine.hostvm.hostagent.daemon import Agent
from pymachine.hostvm.hostagent.events import read_events

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
HANG_GUARD = 30.0  # seconds: a bound against hanging, not a speed claim


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LocalSshd]:
    server = LocalSshd(tmp_path / "sshd").start()
    yield server
    server.stop()


def ready_at(agent: Agent) -> float | None:
    return next(
        (e.ts for e in read_events(agent.events.path)[0] if e.type == "state" and e.get("state") == "ready"),
        None,
    )


def link_up(agent: Agent) -> bool:
    return any(e.type == "link" and e.get("state") == "up" for e in read_events(agent.events.path)[0])


def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_link_up_clock_check_waits_for_the_guest_agents_hello(tmp_path: Path, sshd: LocalSshd) -> None:
    guest = FakeGuestProtocol(tmp_path / "guest.sock")  # not listening yet: a guest agent still importing
    agent = Agent("t", sshd.connect, machine_dir=tmp_path, guest_socket=str(guest.path), probe_interval=0.5)
    agent.start()
    try:
        wait_for(lambda: link_up(agent), "the SSH link")
        # the window in which a check at link-up (the code before) runs its exec (ms against this sshd)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and agent.status()["clock"]["last_check"] is None:
            time.sleep(0.05)
        assert agent.status()["clock"]["last_check"] is None, "the clock was checked before the hello"
        guest.start()
        try:
            wait_for(lambda: agent.status()["clock"]["last_check"] is not None, "the clock check")
            ready = ready_at(agent)
            assert ready is not None and agent.status()["clock"]["last_check"] >= ready - 0.01
        finally:
            guest.stop()
    finally:
        agent.stop()
