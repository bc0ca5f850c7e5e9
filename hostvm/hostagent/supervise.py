"""`python -m pymachine.hostvm.hostagent.supervise NAME`: keep the host agent of machine NAME running.

The host agent is what makes the engine socket and the published ports work; when it dies (a crash, an
OOM kill, kill -9) nothing else would start it again until some `pymachine` command happened to look, and
meanwhile every forwarded port is dead. This process is its parent and does one thing: start it again at
once (well under 2 s with the agent's start-up) — and it never outlives what it serves:

- the agent exits with 0 (asked to shut down by `stop`/`delete`, SIGTERM, or its machine folder gone):
  the supervisor exits too;
- the machine folder is gone or is another folder of the same name (a deleted and re-created machine): it
  exits without a restart, so an old agent never binds the ports of a new machine;
- the agent keeps dying at start (3 times in a row within QUICK_FAILURE seconds of its start): it exits
  with the agent's status, which `launcher.ensure_running` reports with the log tail;
- SIGTERM (what `launcher.stop` sends first): it restarts nothing any more and exits with the agent.

It also holds a copy of each of the agent's listening sockets (handover.py): between a kill and the next
agent's start, clients of the engine socket and of published ports queue in the kernel instead of being
refused, and the next agent serves them from the same sockets.

One supervisor per machine: it holds an flock on `ha-super.pid` for its life, like the agent on `ha.pid`.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from .. import locks, paths
from . import logfile, spare
from .handover import Keeper

FOLDER_ID_ENV = "PYMACHINE_MACHINE_FOLDER_ID"
QUICK_FAILURE = 5.0  # seconds: an agent that dies sooner than this after its start failed to start
MAX_QUICK_FAILURES = 3


def _say(log_path: Path, message: str) -> None:
    try:
        logfile.stdio_follow(log_path)  # our stderr, for a traceback of ours
        with open(log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor {os.getpid()}: {message}\n")
    except OSError:
        pass


class MachineFolder:
    """The machine folder this process was started for, held open: deleted, it shows a link count of 0;
    replaced by another folder of the same name, the path leads to another inode (which cannot be the same
    number: ours stays allocated while we hold it open)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        # the one a supervisor started for, handed to its agents: a folder replaced before an agent looked
        # at it is not theirs either
        expected = os.environ.get(FOLDER_ID_ENV)
        self.identity = expected or f"{st.st_dev}:{st.st_ino}"

    def same(self) -> bool:
        try:
            held, now = os.fstat(self.fd), os.stat(self.path)
            return (
                held.st_nlink > 0
                and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
                and self.identity == f"{held.st_dev}:{held.st_ino}"
            )
        except OSError:
            return False

    def close(self) -> None:
        os.close(self.fd)


def hold_lock(pid_file: Path) -> int | None:
    """Hold an flock on the pid file for the process's life (the agent's ha.pid, the supervisor's
    ha-super.pid): a second one finds it taken and leaves, and a kill -9 releases it with the process, so the
    next `start` can tell a dead process from a live one. Close-on-exec: a child must not keep a dead one
    looking alive."""
    fd = os.open(pid_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    if not locks.try_lock(fd):
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _fork_agent(name: str, mp: paths.MachinePaths, ours: list[int], keeper: Keeper) -> int:
    """The agent as a fork of this process, which imported its modules already: a restart costs no
    interpreter start and no imports (about a second on a loaded host), only the SSH connect and the resync.
    This process is single-threaded, so forking it is safe."""
    pid = os.fork()
    if pid:
        return pid

    def body() -> int:
        for fd in ours:  # the supervisor's lock and folder: the agent must not keep them alive
            os.close(fd)
        keeper.enter_agent()  # the listeners a killed agent left: this one's now (handover.py)
        return _become_agent(name)

    spare.end_child(body)


def _become_agent(name: str, connect: Callable[[], paramiko.Transport] | None = None) -> int:
    """In a forked child (a fresh one, or the spare once activated): run the agent, logging to its log."""
    mp = paths.machine(name)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    log_fd = os.open(mp.agent_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    os.chdir(mp.dir)
    from .daemon import main as agent_main

    return agent_main(name, connect=connect)


def main(name: str) -> int:
    mp = paths.machine(name)
    try:
        folder = MachineFolder(mp.dir)
    except OSError:
        return 0  # no machine (any more): nothing to serve
    if not folder.same():
        return 0
    os.environ[FOLDER_ID_ENV] = folder.identity  # inherited by each forked agent (lifeline.py)
    lock = hold_lock(mp.agent_supervisor_pid)
    if lock is None:
        return 0  # another supervisor serves this machine
    stopping = False
    from . import daemon  # noqa: F401 - imported once here, so that each (re)start is a fork

    _preload(name)

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True  # the caller stops the agent itself (gracefully); we only stop restarting it

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    quick_failures = 0
    status = 0
    keeper = Keeper()
    spare_ok = spare.wanted(name)
    standby: spare.Spare | None = None
    while not stopping:
        child = standby.activate(keeper) if standby is not None else None
        if child is None:
            child = _fork_agent(name, mp, [lock, folder.fd], keeper)
        # the next agent's SSH link, connected while this one runs (spare.py); it inherits our stdio, which
        # the agent's rotations of ha.log may have left in ha.log.1 (logfile.py)
        logfile.stdio_follow(mp.agent_log)
        standby = spare.fork(name, mp, [lock, folder.fd], keeper, _become_agent) if spare_ok else None
        started = time.monotonic()
        status = _wait(child, keeper)
        if stopping or status == 0:
            break
        if not folder.same():
            _say(mp.agent_log, "the machine folder is gone or replaced: not restarting the host agent")
            break
        quick_failures = quick_failures + 1 if time.monotonic() - started < QUICK_FAILURE else 0
        if status > 0 and quick_failures >= MAX_QUICK_FAILURES:  # exits with an error (a kill is no error)
            _say(mp.agent_log, f"the host agent failed {quick_failures} times at start: giving up")
            break
        _say(mp.agent_log, f"the host agent {child} ended with status {status}: starting it again")
        if quick_failures > 1:  # killed again and again right after its start: do not spin
            time.sleep(min(0.25 * 2**quick_failures, 10.0))
    if standby is not None:
        standby.close()
    try:
        if folder.same():
            mp.agent_supervisor_pid.unlink()
    except OSError:
        pass
    keeper.close()
    folder.close()
    os.close(lock)
    return 0 if status == 0 or stopping else 1


def _preload(name: str) -> None:
    """Import here, once, what the agent imports lazily at its start (machine config, driver, SSH, shares):
    0.4 s on a loaded host that each forked agent would otherwise pay before it even opens its SSH link."""
    import importlib

    try:
        from .. import machines, shares, ssh  # noqa: F401

        driver = machines.load_config(name).driver
        importlib.import_module(f"pymachine.hostvm.drivers.{driver}")
    except Exception:  # noqa: BLE001 - an agent without a machine config (tests): it imports what it needs
        pass


def _wait(child: int, keeper: Keeper) -> int:
    """Wait for the agent to end, keeping up with the listeners it hands over meanwhile; its exit code
    (< 0: killed by that signal)."""
    if not hasattr(os, "pidfd_open"):  # macOS: look for its end between messages
        while True:
            pid, wstatus = os.waitpid(child, os.WNOHANG)
            if pid:
                break
            if select.select([keeper], [], [], 0.05)[0]:
                keeper.drain()
        keeper.drain()
        return os.waitstatus_to_exitcode(wstatus)
    pidfd = os.pidfd_open(child)
    try:
        while True:
            ready, _, _ = select.select([keeper, pidfd], [], [])
            if keeper in ready:
                keeper.drain()
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    keeper.drain()  # what it sent just before it died
    return status


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m pymachine.hostvm.hostagent.supervise NAME", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
