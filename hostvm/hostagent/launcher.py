"""Start, stop and ask the host agent of a machine: the API the machines façade and the CLI call.

`ensure_running(name, progress)` is idempotent and repairs: a dead agent (kill -9, crash) is noticed through
its pid-file lock and started again; `status(name)` does the same for a running machine, so `pymachine list`
heals forwards without anyone asking.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import endpoints, locks, paths, proc
from ..errors import PymachineError
from ..progress import stage_from_fields
from . import control
from .events import end_offset, read_events

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
READY_TIMEOUT = 90.0
REPROVISION_EXTRA = 120.0


def agent_pid(name: str) -> int | None:
    """The pid of the live agent of `name`, or None. Live = it holds the lock on its pid file."""
    return _locked_pid(paths.machine(name).agent_pid)


def supervisor_pid(name: str) -> int | None:
    """The pid of the process that restarts the agent of `name` when it dies (hostagent/supervise.py)."""
    return _locked_pid(paths.machine(name).agent_supervisor_pid)


def _locked_pid(pid_file: Path) -> int | None:
    try:
        fd = os.open(pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if not locks.try_lock(fd, shared=True):
            return locks.read_pid(fd)
        locks.unlock(fd)
        return None  # nobody holds it: the agent is gone
    finally:
        os.close(fd)


def _spawn(name: str) -> int:
    mp = paths.machine(name)
    paths.check_socket_path(mp.docker_socket)
    for stale in (mp.control_socket, mp.docker_socket):
        stale.unlink(missing_ok=True)
    log_fh = open(mp.agent_log, "ab")  # noqa: SIM115 - handed to the child, closed here after the fork
    try:
        child = subprocess.Popen(
            # the supervisor starts the agent, and again whenever it dies (see supervise.py)
            [sys.executable, "-m", "pymachine.hostvm.hostagent.supervise", name],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            start_new_session=True,  # outlives the CLI and its terminal's signals
            close_fds=True,
            cwd=str(mp.dir),
        )
    finally:
        log_fh.close()
    return child.pid


def _log_tail(name: str, lines: int = 8) -> str:
    try:
        text = paths.machine(name).agent_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return " / ".join(text.strip().splitlines()[-lines:])


def _ask(name: str, op: str = "status", timeout: float = 3.0, **args: Any) -> dict[str, Any] | None:
    try:
        return control.call(paths.machine(name).control_socket, op, timeout=timeout, **args)
    except (OSError, ValueError):
        return None


_early: dict[str, int] = {}


def start_early(name: str) -> None:
    """The VM was just restored: the agent parked by the saving `stop` connects now (hostagent/parking.py);
    with none alive (the host restarted meanwhile), one is spawned now, before its VM answers, and
    `ensure_running` then waits for this one."""
    if agent_pid(name) is not None:
        if _ask(name, "unpark") is not None:
            return
        stop(name)  # alive but deaf: a new one
    if name not in _early:
        _early[name] = _spawn(name)


def park(
    name: str, script: str, timeout: float = 60.0, shares: list[dict[str, object]] | None = None
) -> tuple[int, str, str] | None:
    """Before a save: the agent runs `script` in the guest over its open link and, when it exits 0, parks
    (closes the link, keeps its listeners). With `shares` (ShareDevice.guest() entries), the guest agent
    unmounts those instead, where it can (hostagent/parking.py). (status, stdout, stderr), or None when no
    agent could do it."""
    return _script(name, "park", script, timeout, **({"shares": shares} if shares else {}))


def run_in_guest(name: str, script: str, timeout: float = 60.0) -> tuple[int, str, str] | None:
    """The agent runs `script` in the guest over its link, once that is up (after a resume: no SSH
    handshake of the caller's own). (status, stdout, stderr), or None when no agent could do it."""
    return _script(name, "run", script, timeout)


def remount_in_guest(
    name: str, shares: list[dict[str, object]], timeout: float = 30.0
) -> dict[str, str | None] | None:
    """After a resume: the guest agent mounts the device shares (ShareDevice.guest() entries) again, asked
    over the host agent's link (hostagent/parking.py). {path: None when mounted, else why not}, or None when
    no agent could ask, or its guest agent cannot do it: the caller runs the remount script instead."""
    if agent_pid(name) is None:
        return None
    answer = _ask(name, "remount", timeout=timeout + 25, shares=shares, timeout_s=timeout)
    mounted = answer.get("mounted") if answer is not None else None
    if not isinstance(mounted, dict):
        return None
    return {str(path): None if error is None else str(error) for path, error in mounted.items()}


def _script(name: str, op: str, script: str, timeout: float, **args: Any) -> tuple[int, str, str] | None:
    if agent_pid(name) is None:
        return None
    answer = _ask(name, op, timeout=timeout + 25, script=script, timeout_s=timeout, **args)
    if answer is None or "status" not in answer:
        return None
    return int(answer["status"]), str(answer.get("out") or ""), str(answer.get("err") or "")


def parked(name: str) -> bool:
    st = _ask(name) if agent_pid(name) is not None else None
    return st is not None and st.get("state") == "saved"


def ensure_running(
    name: str, progress: Progress | None = None, timeout: float = READY_TIMEOUT
) -> dict[str, Any]:
    """Make sure the host agent of `name` runs and is ready (link up, guest agent subscribed); return status.

    Raises PymachineError naming what is not ready (the SSH link and its last error, or the guest agent)."""
    say = progress or (lambda _m: None)
    mp = paths.machine(name)
    events_from = end_offset(mp.events)
    pid = agent_pid(name)
    child = _early.pop(name, None)  # spawned by start_early, maybe not holding its lock yet
    if child is not None and _exited(child):
        child = None
    if pid is None and child is None:
        say("starting the host agent")
        child = _spawn(name)
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        batch, events_from = read_events(mp.events, events_from)
        for event in batch:
            if event.type == "link" and event.get("state") == "up":
                say("host agent: SSH link up")
            elif event.type == "state" and event.get("state") == "ready":
                say(f"host agent: engine socket ready at {event.get('docker_socket')}")
            elif event.type == "stage" and (stage := stage_from_fields(event.fields)) is not None:
                say(stage)
            elif event.type == "agent" and event.get("action") == "reprovisioning":
                say("host agent: the guest agent differs from this host's copy: re-provisioning it")
                deadline += REPROVISION_EXTRA  # the guest restarts its agent: seconds to minutes under TCG
        last = _ask(name)
        if last is not None and last.get("state") == "ready":
            ensure_docker_context(name)
            return last
        if child is not None and _exited(child):
            raise PymachineError(
                f"the host agent of machine '{name}' exited at start: {_log_tail(name)}",
                hint="read its log; 'pymachine start' tries again",
                log_path=mp.agent_log,
            )
        time.sleep(0.03)  # one control-socket round trip per look: a resume's ready is seen at once
    raise PymachineError(
        f"the host agent of machine '{name}' is not ready: {_not_ready(last)}",
        hint="is the machine running? see 'pymachine list'",
        log_path=mp.agent_log,
    )


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")
    return done == pid


def _not_ready(st: dict[str, Any] | None) -> str:
    if st is None:
        return "it does not answer on its control socket"
    link = st.get("link") or {}
    if link.get("state") != "up":
        return f"the SSH link is down ({link.get('last_error') or 'connecting'})"
    return "the guest agent's event stream is not open (is the guest agent running?)"


def stop(name: str, timeout: float = 10.0) -> None:
    """Stop the agent: ask it (it closes its listeners and sockets), then SIGTERM, then SIGKILL."""
    mp = paths.machine(name)
    supervisor = supervisor_pid(name)
    if supervisor is not None:
        _signal(supervisor, signal.SIGTERM)  # restart nothing from now on; it exits with the agent
    for _ in range(2):  # twice: the supervisor may have been starting a new agent as it got the signal
        pid = agent_pid(name)
        if pid is not None:
            _ask(name, "shutdown")
            if not _wait_gone(name, timeout / 2):
                _signal(pid, signal.SIGTERM)
                if not _wait_gone(name, timeout / 2):
                    _signal(pid, signal.SIGKILL)
                    _wait_gone(name, 2)
        if supervisor is None or _wait_gone(name, 2, supervisor_pid):
            break
    for leftover in (mp.control_socket, mp.docker_socket):
        leftover.unlink(missing_ok=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(name: str, timeout: float, which: Callable[[str], int | None] = agent_pid) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if which(name) is None:
            return True
        time.sleep(0.05)
    return which(name) is None


def status(name: str, repair: bool = False) -> dict[str, Any]:
    """What `list`/`inspect` show: `{"running": bool, "pid", "state", "link", "engine_socket", "forwards",
    ...}`. `repair`: the caller knows the machine runs, so a dead agent (and its supervisor) gets a new one
    (not waited for). The caller passes that in: the launcher does not call back into the machines façade,
    which drives the launcher."""
    pid = agent_pid(name)
    if pid is not None:
        st = _ask(name)
        if st is not None:
            st["running"] = True
            return st
        return {"running": True, "pid": pid, "state": "unresponsive", "forwards": []}
    result: dict[str, Any] = {"running": False, "pid": None, "state": "stopped", "forwards": []}
    if supervisor_pid(name) is not None:  # it is starting the agent again this very moment
        result.update(running=True, state="restarting")
    elif repair:
        try:
            result.update(running=True, pid=_spawn(name), state="restarting", repaired=True)
        except (OSError, PymachineError) as exc:
            result["error"] = f"could not restart the host agent: {exc}"
    return result


def wake(name: str, reason: str = "wake", timeout: float = 60.0) -> bool:
    """Ask the host agent to resume the machine if its resource saver paused it (and to count this as
    activity). False when no agent answered: the caller then asks the driver itself."""
    if agent_pid(name) is None:
        return False
    try:
        answer = control.call(paths.machine(name).control_socket, "wake", timeout=timeout, reason=reason)
    except (OSError, ValueError):
        return False
    return bool(answer.get("ok"))


def docker_host(name: str) -> str:
    return endpoints.engine_address(name)


def context_name(name: str) -> str:
    return f"pymachine-{name}"


def _context_host(ctx: str) -> str | None:
    """The docker endpoint of context `ctx` from the docker CLI's store (contexts/meta/<sha256>/meta.json)."""
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    meta = config / "contexts" / "meta" / hashlib.sha256(ctx.encode()).hexdigest() / "meta.json"
    try:
        return json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, LookupError, TypeError):
        return None


def ensure_docker_context(name: str) -> bool:
    """Create or update the docker CLI context `pymachine-NAME` (only when the docker CLI is installed)."""
    if shutil.which("docker") is None:
        return False
    ctx, host = context_name(name), docker_host(name)
    if _context_host(ctx) == host:
        return True  # read from the CLI's own store: no subprocess on every command
    found = proc.run(["docker", "context", "inspect", ctx], check=False, timeout=30)
    try:
        current = (
            json.loads(found.stdout or b"[]")[0]["Endpoints"]["docker"]["Host"]
            if found.returncode == 0
            else None
        )
    except (ValueError, LookupError, TypeError):
        current = None
    if current == host:
        return True
    verb = "update" if found.returncode == 0 else "create"
    result = proc.run(
        [
            "docker",
            "context",
            verb,
            ctx,
            "--description",
            f"pymachine machine {name}",
            "--docker",
            f"host={host}",
        ],
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        log.warning(
            "docker context %s %s failed: %s", verb, ctx, result.stderr.decode(errors="replace").strip()
        )
        return False
    return True


def remove_docker_context(name: str) -> None:
    """Drop the `pymachine-NAME` context (for `delete`: a deleted machine's context would point nowhere)."""
    if shutil.which("docker") is None or _context_host(context_name(name)) is None:
        return
    proc.run(["docker", "context", "rm", "-f", context_name(name)], check=False, timeout=30)
