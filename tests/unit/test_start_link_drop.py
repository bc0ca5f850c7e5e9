"""start's "guest agent answers" stage logs in anew when the SSH session itself ended
(machines._link_dropped): paramiko reports that as EOFError, or as an SSHException wrapping it when a
channel was being opened; a refused channel on a live session is not a dropped link."""

from __future__ import annotations

import paramiko

from pymachine.hostvm import machines


class _Transport:
    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


class _Client:
    def __init__(self, transport: _Transport | None) -> None:
        self.transport = transport

    def get_transport(self) -> _Transport | None:
        return self.transport


def test_eof_is_a_dropped_link() -> None:
    assert machines._link_dropped(_Client(_Transport(True)), EOFError())


def test_an_ssh_error_on_an_ended_session_is_a_dropped_link() -> None:
    error = paramiko.SSHException("SSH session ended while opening a channel: EOFError()")
    assert machines._link_dropped(_Client(_Transport(False)), error)
    assert machines._link_dropped(_Client(None), error)


def test_a_refusal_on_a_live_session_and_other_errors_are_not() -> None:
    assert not machines._link_dropped(_Client(_Transport(True)), paramiko.SSHException("refused"))
    assert not machines._link_dropped(_Client(_Transport(False)), ValueError("x"))
