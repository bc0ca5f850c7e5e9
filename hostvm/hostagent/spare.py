"""A spare, pre-connected host agent: the supervisor keeps one standby process whose SSH link is already up.

After a kill -9 of the agent, the next one used to start with the SSH handshake to the guest, which an
emulated (TCG) guest on a loaded host makes slow: 1.5-4.5 s at load 25 (bench/hostagent_respawn.py), all that
time the engine socket's clients wait. The spare pays it in advance. It is a fork of the supervisor (which is
single-threaded, so forking it is safe), connects with the machine's key and its pinned host key exactly as
the agent does (daemon.machine_connect), and waits on its end of a socketpair:

- an activation message carries a copy of every listener the supervisor holds (handover.Keeper.send_held);
  the spare then becomes the agent, with its transport as the agent's first link (a fresh connect if that
  transport died meanwhile);
- end of file means the supervisor is gone: the spare exits, it never outlives what it serves.

While its link is up it holds an flock on `ha-spare.pid`: the resource saver (idle.py) counts the guest's SSH
connections to tell a user's login from the agent's own link and subtracts the spare's too.
`PYMACHINE_SPARE_LINK=0` turns the spare off (bench/hostagent_respawn.py measures with and without).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import paramiko

from .. import locks, paths
from . import events
from .handover import Keeper

DISABLE_ENV = "PYMACHINE_SPARE_LINK"
RETRY_MAX = 2.0  # seconds between connect attempts at most (a machine being saved has no guest to reach)
READY_WAIT_MAX = 300.0  # seconds the spare waits for the agent's first "ready" before it connects anyway


def wanted(name: str) -> bool:
    """A spare for a local machine only (a remote one's link goes through another host's)."""
    if os.environ.get(DISABLE_ENV) == "0":
        return False
    try:
        from .. import remote_host, remote_libvirt

        return remote_libvirt.machine_uri(name) is None and not remote_host.agent_options(name)
    except Exception:  # noqa: BLE001 - no machine config (an agent run by a test): no spare
        return False


def connected(mp: paths.MachinePaths) -> bool:
    """The spare's SSH link is up (its flock is held): one of the guest's SSH connections is ours."""
    try:
        fd = os.open(mp.agent_spare_pid, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if locks.try_lock(fd):
            locks.unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


class Spare:
    """The supervisor's handle on its standby."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def alive(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG)[0] == 0

    def activate(self, keeper: Keeper) -> int | None:
        """Make the standby the agent; its pid, or None when it cannot be (the caller forks a fresh agent)."""
        try:
            if not self.alive():
                self.close()
                return None
            keeper.send_held(self.sock)
        except OSError:
            self.close()
            return None
        self.sock.close()
        return self.pid

    def close(self) -> None:
        """The supervisor ends (or the standby is replaced): the standby exits."""
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def fork(
    name: str, mp: paths.MachinePaths, ours: list[int], keeper: Keeper, become: Callable[..., int]
) -> Spare:
    """Fork the standby. `become(name, connect)` runs the agent in it once activated (supervise.py's)."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        theirs.close()
        return Spare(pid, mine)

    def body() -> int:
        mine.close()
        for fd in ours:  # the supervisor's lock and folder: the standby must not keep them alive
            os.close(fd)
        keeper.enter_spare()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        return _standby(name, mp, theirs, keeper, become)

    end_child(body)


def end_child(body: Callable[[], int]) -> NoReturn:
    """In a forked child of the supervisor: run `body` and exit with its code, whatever happens."""
    code = 1
    try:
        code = body()
    except BaseException:  # noqa: BLE001 - whatever happens, the forked child ends here
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _standby(
    name: str, mp: paths.MachinePaths, sock: socket.socket, keeper: Keeper, become: Callable[..., int]
) -> int:
    from .daemon import machine_connect

    connect = machine_connect(name)
    link = _SpareLink(connect, mp.agent_spare_pid)
    since = events.end_offset(mp.events)

    def run_after_ready() -> None:
        # Not while the machine boots: under emulation a second SSH handshake then takes guest CPU from the
        # boot's own critical path (the agent's link, the guest agent's start).
        _wait_for_ready(mp.events, since, time.monotonic() + READY_WAIT_MAX)
        link.run()

    threading.Thread(target=run_after_ready, name="spare-link", daemon=True).start()
    if not keeper.enter_from(sock):  # blocks until activated, or the supervisor is gone
        return 0
    sock.close()
    ready = link.hand_over()

    def first_then_fresh() -> paramiko.Transport:
        nonlocal ready
        transport, ready = ready, None
        return transport if transport is not None and transport.is_active() else connect()

    return become(name, first_then_fresh)


def _wait_for_ready(path: Path, offset: int, deadline: float) -> None:
    """Until the agent's event log gets a `state: ready` after `offset` (the log's size when the spare was
    forked; a rotated log is read from its start), or the deadline passes."""
    while time.monotonic() < deadline:
        if events.end_offset(path) < offset:
            offset = 0
        found, offset = events.read_events(path, offset)
        if any(e.type == "state" and e.get("state") == "ready" for e in found):
            return
        time.sleep(0.5)


class _SpareLink:
    """The standby's link: connected, and connected again when it dies, until handed over."""

    def __init__(self, connect: Callable[[], paramiko.Transport], lock: Path) -> None:
        self.connect = connect
        self.lock = lock
        self._cond = threading.Condition()
        self._transport: paramiko.Transport | None = None
        self._handed = False
        self._lock_fd: int | None = None

    def run(self) -> None:
        delay = 0.1
        while True:
            with self._cond:
                if self._handed:
                    return
                alive = self._transport is not None and self._transport.is_active()
                if not alive:
                    self._release()
                wait = 1.0 if alive else delay
                self._cond.wait(wait)
                if self._handed:
                    return
            if alive:
                continue
            try:
                transport = self.connect()
            except Exception:  # noqa: BLE001 - not reachable now (booting, saved, paused): later
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = 0.1
            with self._cond:
                if self._handed:
                    transport.close()
                    return
                self._transport = transport
                self._hold()

    def hand_over(self) -> paramiko.Transport | None:
        """Stop keeping the link; the transport if it is up (the agent's now)."""
        with self._cond:
            self._handed = True
            self._cond.notify_all()
            transport, self._transport = self._transport, None
            self._release()
        return transport

    def _hold(self) -> None:
        if self._lock_fd is None:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if locks.try_lock(fd):
                self._lock_fd = fd
            else:
                os.close(fd)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None
