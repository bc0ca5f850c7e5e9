"""handover.Keeper: the supervisor's copies of the host agent's listeners follow the agent's hold/drop
messages (fds passed over the real socketpair), and a forked agent takes them over."""

from __future__ import annotations

import os
import socket

import pytest
from support import handover_fixture

from pymachine.hostvm.hostagent import handover

keeper = handover_fixture.keeper  # the fixture, shared with the other handover/spare tests
listener = handover_fixture.listener


def test_hold_then_drop(keeper: handover.Keeper) -> None:
    srv = listener()
    port = srv.getsockname()[1]
    key = handover.port_key(("tcp", "127.0.0.1", port))
    handover.hold(key, srv, {"host_port": port})
    keeper.drain()
    assert list(keeper.held) == [key] and keeper.held[key][1] == {"host_port": port}
    srv.close()  # the agent's copy gone (a kill): the supervisor's copy still accepts
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    handover.drop(key)
    keeper.drain()
    assert keeper.held == {}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_second_hold_replaces_the_first(keeper: handover.Keeper) -> None:
    a, b = listener(), listener()
    handover.hold("engine", a)
    handover.hold("engine", b)
    keeper.drain()
    fd = keeper.held["engine"][0]
    assert socket.socket(fileno=os.dup(fd)).getsockname() == b.getsockname()
    a.close()
    b.close()


def test_a_forked_agent_inherits_the_held_listeners(keeper: handover.Keeper) -> None:
    srv = listener()
    port = srv.getsockname()[1]
    key = handover.port_key(("tcp", "127.0.0.1", port))
    info = {"proto": "tcp", "host_ip": "127.0.0.1", "host_port": port, "guest_port": 80, "container": "c"}
    handover.hold(key, srv, info)
    handover.hold("engine", listener())
    keeper.drain()
    srv.close()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)  # queued while "no agent runs"
    pid = os.fork()
    if pid == 0:  # the next agent
        code = 1
        try:
            keeper.enter_agent()
            ports = handover.held_ports()
            engine = handover.take("engine")
            if engine is not None and [i for i, _ in ports] == [info]:
                conn, _ = ports[0][1].accept()  # the client that queued
                conn.sendall(b"served")
                code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert client.recv(16) == b"served"
    client.close()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd (macOS)"])
def test_the_supervisor_keeps_what_an_agent_held_until_it_died(
    keeper: handover.Keeper, pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymachine.hostvm.hostagent import supervise

    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    pid = os.fork()
    if pid == 0:  # an agent that hands over a listener, then dies
        code = 1
        try:
            srv = listener()
            handover.hold("engine", srv)
            code = 3
        finally:
            os._exit(code)
    assert supervise._wait(pid, keeper) == 3
    assert list(keeper.held) == ["engine"]
