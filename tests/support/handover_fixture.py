"""What the handover and spare unit tests share: this test process plays the agent that hands its listeners
to a real Keeper (hostagent/handover.py), and loopback listeners to hand over."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pymachine.hostvm.hostagent import handover


@pytest.fixture
def keeper() -> Iterator[handover.Keeper]:
    k = handover.Keeper()
    handover._channel = k.theirs  # this process plays the agent
    yield k
    handover._channel = None
    handover._inherited.clear()
    k.close()


def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s
