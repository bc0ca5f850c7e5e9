"""spare.py: the supervisor's pre-connected standby agent takes over the held listeners when activated (fds
passed over a real socketpair, in a real forked process), exits when the supervisor is gone, and its flock
tells the resource saver that one guest SSH connection is the spare's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support import handover_fixture

from pymachine.hostvm import locks, paths
from pymachine.hostvm.hostagent import handover, spare

keeper = handover_fixture.keeper  # the fixture, shared with the other handover/spare tests
listener = handover_fixture.listener


def _standby(keeper: handover.Keeper) -> tuple[int, socket.socket]:
    """A forked standby as spare.fork makes it: stale copies dropped, then blocked until activated; it serves
    one queued client of each port it was handed and exits 0, or exits 5 when told the supervisor is gone."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            mine.close()
            keeper.enter_spare()
            if not keeper.enter_from(theirs):
                code = 5
            else:
                for _info, sock in handover.held_ports():
                    conn, _ = sock.accept()
                    conn.sendall(b"served by the spare")
                    conn.close()
                code = 0 if handover.take(handover.ENGINE) is not None else 2
        finally:
            os._exit(code)
    theirs.close()
    return pid, mine


def test_the_activated_spare_serves_the_listeners_held_after_its_fork(keeper: handover.Keeper) -> None:
    handover.hold(handover.ENGINE, listener())
    keeper.drain()
    pid, sock = _standby(keeper)  # forked before the port below was published
    srv = listener()
    port = srv.getsockname()[1]
    info = {"proto": "tcp", "host_ip": "127.0.0.1", "host_port": port}
    handover.hold(handover.port_key(("tcp", "127.0.0.1", port)), srv, info)
    keeper.drain()
    srv.close()  # the agent is killed: only the supervisor's copy is left
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    standby = spare.Spare(pid, sock)
    assert standby.activate(keeper) == pid
    assert client.recv(64) == b"served by the spare"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    client.close()


def test_the_spare_exits_when_the_supervisor_is_gone(keeper: handover.Keeper) -> None:
    pid, sock = _standby(keeper)
    sock.close()  # the supervisor's end: what a kill -9 of the supervisor does
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 5


def test_connected_follows_the_spare_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path))
    mp = paths.machine("m1")
    mp.dir.mkdir(parents=True)
    assert not spare.connected(mp)
    fd = os.open(mp.agent_spare_pid, os.O_RDWR | os.O_CREAT, 0o600)
    assert locks.try_lock(fd)
    assert spare.connected(mp)
    os.close(fd)
    assert not spare.connected(mp)


def test_the_spare_connects_only_after_the_agent_said_ready(tmp_path: Path) -> None:
    """A machine that boots gets no second SSH handshake before its agent is ready (guest CPU under TCG)."""
    import threading
    import time

    events = tmp_path / "events.jsonl"
    events.write_text('{"state": "ready", "ts": 1, "type": "state"}\n')  # an earlier agent's, before the fork
    offset = events.stat().st_size
    done = threading.Event()
    waiter = threading.Thread(
        target=lambda: (spare._wait_for_ready(events, offset, time.monotonic() + 60), done.set())
    )
    waiter.start()
    with events.open("a") as fh:
        fh.write('{"state": "starting", "ts": 2, "type": "state"}\n{"ts": 3, "type": "link", "up": true}\n')
    assert not done.wait(1.5)
    with events.open("a") as fh:
        fh.write('{"state": "ready", "ts": 4, "type": "state"}\n')
    assert done.wait(10)
    waiter.join()
    events.write_text("")  # rotated: read from its start
    assert spare.events.end_offset(events) == 0
    started = time.monotonic()
    spare._wait_for_ready(events, offset, started + 1)  # nothing comes: gives up at the deadline
    assert time.monotonic() - started >= 1
