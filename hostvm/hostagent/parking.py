"""The host agent across a saving `stop` and the resume: it stays, parked, instead of being stopped and
started again (issue 14: resume → engine answering ≤ 2 s).

`park` (the control op `stop` sends before the save) runs the guest's quiesce script (flush, unmount the
device shares) over the agent's open link, which spares `stop` an SSH handshake with the emulated sshd,
lets go of the sshfs shares, closes the link and makes no attempt to connect until `unpark`. The engine
socket and the published ports keep listening meanwhile: a client is told at once that the machine is
stopped (a docker client reads the engine's JSON error), and the resumed machine finds its listeners where
they were.

`unpark` (what `start` sends the moment the restore returns) connects at once: no agent process to start, no
reconnect backoff to wait out. `start` then waits for "ready" as after any start, which needs the guest
agent's hello on the new link: the engine answers when `start` returns.

The resource saver stands down while parked (the held connection keeps it from pausing a VM being saved).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

from pymachine_agent import protocol

from . import guestapi

log = logging.getLogger(__name__)
CONTROL_OPS = ("park", "unpark", "run", "remount")
SAVED_META = "saved.json"  # savestate.META_FILE: a state saved while this agent was not running


class Parking:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._hold = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._resumed = False

    @property
    def parked(self) -> bool:
        return bool(self.agent.link.parked)

    def reason(self) -> str:
        name = self.agent.name
        return f"machine '{name}' is stopped (its state is saved): run 'pymachine start {name}'"

    def on_start(self, machine_dir: Path) -> None:
        """An agent started (again, by its supervisor) while its machine is saved waits to be unparked."""
        if (machine_dir / SAVED_META).exists():
            self.agent.link.park(self.reason())

    def park(self, script: str = "", timeout: float = 60.0, shares: Any = None) -> dict[str, Any]:
        """Run `script` in the guest (none: just park); a non-zero exit leaves everything as it was. With
        `shares` (the device shares, ShareDevice.guest() entries), the guest agent unmounts them instead
        (`POST /pymachine/v1/quiesce`: no exec; the script took 0.4-0.9 s), the script where it cannot."""
        with self._lock:
            agent = self.agent
            if agent.memback is not None:  # a saved state must not carry an inflated balloon
                agent.memback.cancel()
            if agent.saver is not None and not self.parked:
                # Counted as a client: wakes a paused machine and keeps the saver from pausing it meanwhile.
                self._hold.enter_context(agent.saver.connection("saving stop"))
            answer: dict[str, Any] = {"ok": True, "status": 0, "out": "", "err": ""}
            transport = agent.link.current()
            if script:
                try:
                    transport = agent.link.get(timeout=min(timeout, 20.0))
                    done = self._quiesce(transport, shares, timeout) if shares else None
                    status, out, err = done if done is not None else run(transport, script, timeout)
                except (paramiko.SSHException, OSError, EOFError, guestapi.GuestApiError) as exc:
                    self._release()
                    return {"ok": False, "error": f"the host agent could not run it: {exc}"}
                answer.update(status=status, out=out, err=err)
                if status != 0:
                    self._release()
                    answer["ok"] = False
                    return answer
            agent.shares.unmount_all(transport)
            for mount in list(agent.shares.mounts.values()):
                mount.state = "pending"  # mounted again on the resumed link (daemon.Agent._subscribe)
            agent.link.park(self.reason())
            agent.events.emit("state", state="saved")
            return answer

    def unpark(self) -> dict[str, Any]:
        with self._lock:
            was = self.parked
            self._resumed = was  # before the link can come up
            self.agent.link.unpark()
            self._release()
            if was:
                self.agent.events.emit("state", state="starting", reason="resumed")
            return {"ok": True, "was_parked": was}

    def take_resumed(self) -> bool:
        """True once, for the first link after an unpark: the guest is the one saved (same guest agent, same
        share list), so the link-up skips asking /info and sending the shares again, and steps the clock."""
        was, self._resumed = self._resumed, False
        return was

    def step_clock(self, transport: paramiko.Transport) -> None:
        """The resumed guest's clock stands where it was saved: set it, one exec (no read first)."""
        agent = self.agent
        try:
            status, err = step_guest_clock(transport)
            if status != 0:
                raise OSError(err.strip() or f"exit status {status}")
            agent.clock.update(last_check=time.time(), skew=None)
            agent.clock["resyncs"] += 1
            agent.events.emit("clock", ok=True, reason="resumed from a saved state")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            agent.events.emit("clock", ok=False, error=str(exc), reason="resumed from a saved state")

    def run_script(self, script: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run `script` in the guest over the link, once it is up: a resume's share remount (`start`) needs
        no SSH handshake of its own beside the agent's (0.6-0.8 s with the emulated sshd, on the same vCPUs
        as the agent's link-up)."""
        try:
            status, out, err = run(self.agent.link.get(timeout=min(timeout, 20.0)), script, timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return {"ok": False, "error": f"the host agent could not run it: {exc}"}
        log.info("ran a script in the guest for a client over the link: exit status %d", status)
        return {"ok": status == 0, "status": status, "out": out, "err": err}

    def _quiesce(
        self, transport: paramiko.Transport, shares: Any, timeout: float
    ) -> tuple[int, str, str] | None:
        """The guest agent's quiesce as the script's (status, out, err): 3 and why when the shares stay.
        None when it cannot (an older guest agent, a cluster node's dockerd, a refused body): the script."""
        if self.agent.dockerd is not None:
            return None
        body = protocol.device_shares_request(shares)
        status, answer = self._ask_guest(transport, "/quiesce", body, timeout)
        if status != 200 or not isinstance(answer, dict) or "busy" not in answer:
            if status != 404:
                log.warning("the guest agent's quiesce answered %s %s: the script instead", status, answer)
            return None
        busy = answer["busy"]
        log.info("the guest agent unmounted the shares for the save: %s", busy or "done")
        return (0, "", "") if busy is None else (3, str(busy), "")

    def _ask_guest(
        self, transport: paramiko.Transport, path: str, body: dict[str, Any], timeout: float
    ) -> tuple[int, Any]:
        chan = self.agent.opener.open(transport)
        chan.settimeout(timeout)
        return guestapi.request(chan, "POST", guestapi.API + path, body)

    def remount(self, shares: Any, timeout: float = 30.0) -> dict[str, Any]:
        """A resume's device shares mounted again by the guest agent (`POST /pymachine/v1/remount`) on a
        channel of the link: no exec, no shell, no `mount` forked in a guest just restored (0.3-0.45 s less
        than `run_script`'s script). {"ok", "mounted": {path: error|null}}; "unsupported" when the guest agent
        predates it (404) or is not ours (a cluster node's dockerd): the caller runs the script instead."""
        if self.agent.dockerd is not None:
            return {"ok": False, "unsupported": True}
        body = protocol.device_shares_request(shares, max(timeout - 5.0, 1.0))
        try:
            transport = self.agent.link.get(timeout=min(timeout, 20.0))
            status, answer = self._ask_guest(transport, "/remount", body, timeout)
        except (paramiko.SSHException, OSError, EOFError, guestapi.GuestApiError) as exc:
            return {"ok": False, "error": f"the host agent could not ask the guest agent: {exc}"}
        if status == 404:
            return {"ok": False, "unsupported": True}
        mounted = answer.get("mounted") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(mounted, dict):
            return {"ok": False, "error": f"the guest agent answered {status}: {answer}"}
        log.info("the guest agent mounted the shares again: %s", mounted)
        return {"ok": all(e is None for e in mounted.values()), "mounted": mounted}

    def _release(self) -> None:
        self._hold.close()
        self._hold = contextlib.ExitStack()

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        op, script = request.get("op"), str(request.get("script") or "")
        if op == "park":
            return self.park(script, float(request.get("timeout_s") or 60.0), request.get("shares"))
        if op == "run":
            return self.run_script(script, float(request.get("timeout_s") or 60.0))
        if op == "remount":
            return self.remount(request.get("shares"), float(request.get("timeout_s") or 30.0))
        return self.unpark()


def run(transport: paramiko.Transport, script: str, timeout: float) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `script` run by the guest's shell over one exec channel."""
    chan = transport.open_session(timeout=10)
    try:
        chan.settimeout(timeout)
        chan.exec_command(script)
        out, err = bytearray(), bytearray()
        while data := chan.recv(65536):
            out += data
        while data := chan.recv_stderr(65536):  # stdout's end is the command's: stderr has all it will get
            err += data
        return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        chan.close()


def step_guest_clock(transport: paramiko.Transport, timeout: float = 30.0) -> tuple[int, str]:
    """Set the guest clock to the host's. The host's time is sent when the guest's shell asks for it, not
    written into the command: an exec takes seconds to start in a loaded emulated guest, and a time taken
    before it would put the clock that far behind. (exit status, stderr)"""
    chan = transport.open_session(timeout=10)
    try:
        chan.settimeout(timeout)
        chan.exec_command('echo ready; read t && date -s "@$t" >/dev/null')
        said = b""
        while b"\n" not in said:
            data = chan.recv(64)
            if not data:
                break
            said += data
        chan.sendall(f"{time.time():.3f}\n".encode())
        status = chan.recv_exit_status()
        err = bytearray()
        while data := chan.recv_stderr(65536):
            err += data
        return status, err.decode(errors="replace")
    finally:
        chan.close()


def error_response(message: str) -> bytes:
    """The engine's JSON error as an HTTP reply: what a client of a stopped machine's engine socket reads."""
    body = json.dumps({"message": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
