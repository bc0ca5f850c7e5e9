"""tests/support's `refused` predicate, which polls for a listener to close: a reset (a connect that reached
the backlog of a listener closing right after, seen under load in test_unpublishing_closes_the_listener)
means it was still open, not an error that ends the poll."""

from __future__ import annotations

import socket

import pytest
from support import hostagent_vm


def test_a_reset_is_still_open_and_a_refusal_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def reset(*_a: object, **_k: object) -> socket.socket:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(hostagent_vm.socket, "create_connection", reset)
    assert hostagent_vm.refused(1) is False
    monkeypatch.undo()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # bound, never listening: nothing there
    assert hostagent_vm.refused(port) is True
