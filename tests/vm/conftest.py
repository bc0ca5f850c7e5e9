"""Fixtures for vm-tier tests: one started machine per test session, shared by every vm test (boots are
expensive under TCG), in an isolated PYMACHINE_HOME that shares the image cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Registered here, once for the whole tier. A module that imports a session fixture gets a copy of its own
# (pytest keys fixtures by where they are defined): eleven modules importing `hostagent_machine` booted eleven
# machines, each kept running to the end of the session.
from support.hostagent_vm import ha_vm, hostagent_machine  # noqa: F401
from support.machines import SHARED_CACHE, StartedMachine, started_machine


@pytest.fixture(scope="session")
def session_machine() -> Iterator[StartedMachine]:
    """A machine that is created and started once per session; deleted at the end."""
    with started_machine("s") as machine:
        yield machine


@pytest.fixture
def machine(session_machine: StartedMachine, monkeypatch: pytest.MonkeyPatch) -> StartedMachine:
    """The session machine, with PYMACHINE_HOME pointing at its home for this test (for in-process calls)."""
    monkeypatch.setenv("PYMACHINE_HOME", str(session_machine.home))
    monkeypatch.setenv("PYMACHINE_CACHE", str(SHARED_CACHE))
    from pymachine.hostvm import machines

    if machines.get(session_machine.name).state != "running":  # a test before may have stopped it
        machines.start(session_machine.name)
    return session_machine


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_dnat() -> None:
    """A test agent killed by another session (privileged/compat tiers run on this host's network) leaves its
    nft table, whose `output` chain DNATs the host ports it had published into a dead bridge: a port that
    free_port() hands out then times out instead of refusing (test_pymachine_ssh_ignores_a_hostile_ssh_config
    in CI). The session-start sweep misses those killed since; sweep again per module (~0.1 s)."""
    import os

    if os.geteuid() == 0:
        from support import leftovers

        leftovers.sweep()
