"""Starting one run of a container: spawn its supervisor from the zygote and run the start handshake (see
supervisor.py): namespaces ready, the network hook, early attach streams, then "go"."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from pymachine_agent import revalidate
from pymachine_agent.runtime.callbacks import Callbacks, NetnsHook
from pymachine_agent.runtime.cgroup_place import CgroupPlace
from pymachine_agent.runtime.errors import StartError
from pymachine_agent.runtime.record import Record
from pymachine_agent.runtime.table import ContainerTable
from pymachine_agent.runtime.zygote import Zygote

log = logging.getLogger("pymachine_agent.runtime")

START_TIMEOUT = 60.0


class Launcher:
    def __init__(
        self, zygote: Zygote, table: ContainerTable, cgroups: CgroupPlace, callbacks: Callbacks
    ) -> None:
        self._zygote = zygote
        self._table = table
        self._cgroups = cgroups
        self._callbacks = callbacks

    def launch(self, c: Record) -> None:
        """Spawn the supervisor and run the start handshake; returns once the user process has exec'd (its
        run.json then names the supervisor to watch). StartError if it cannot start."""
        c.state.pop("paused", None)
        # a bind source in a share as the host has it now: a bind pins the folder it is given for the
        # container's life, and the VM's virtiofs caches may still hold one the host deleted (revalidate.py)
        revalidate.refresh(m.source for m in c.spec.mounts if m.type == "bind")
        hook = self._callbacks.netns_hook(c)
        handshake = bool(hook or c.pending)
        ctl, theirs = socket.socketpair()
        log_path = os.path.join(c.dir, "supervisor.log")
        try:
            self._zygote.spawn(c.dir, theirs.fileno(), self._cgroups.root, self._cgroups.parent, handshake)
        except OSError as e:
            ctl.close()
            raise StartError(f"cannot start the container's supervisor: {e}") from e
        finally:
            theirs.close()
        ctl.settimeout(START_TIMEOUT)
        reader = ctl.makefile("rb")

        def message() -> dict[str, Any]:
            try:
                line = reader.readline()
            except TimeoutError:  # alive but silent: a starved guest, or a hang; not a death
                what = f"the container's supervisor did not report within {START_TIMEOUT:.0f} s"
                return {"event": "error", "exit_code": 128, "message": _with_log(what, log_path)}
            except OSError:
                line = b""
            if line:
                return json.loads(line)
            return {"event": "error", "exit_code": 128, "message": _with_log("the supervisor died", log_path)}

        try:
            if handshake:
                self._handshake(c, hook, ctl, message)
            msg = message()
            if msg.get("event") != "started":
                self._callbacks.teardown(c)
                raise StartError(self._start_error(c, msg), msg.get("exit_code", 128))
        finally:
            reader.close()
            ctl.close()
        c.state["restarting"] = False
        c.state["started_at"] = msg["started_at"]
        c.save(durable=False)

    def _handshake(
        self, c: Record, hook: NetnsHook | None, ctl: socket.socket, message: Callable[[], dict[str, Any]]
    ) -> None:
        """Between "namespaces ready" and "go": the network hook, then connecting early attach streams."""
        msg = message()
        if msg.get("event") != "ready":
            raise StartError(self._start_error(c, msg), msg.get("exit_code", 128))
        try:
            if hook:
                hook(c.id, msg["pid"])
        except Exception as e:
            ctl.sendall(json.dumps({"abort": f"network setup failed: {e}"}).encode() + b"\n")
            message()
            self._callbacks.teardown(c)
            raise StartError(f"network setup failed: {e}") from e
        for stream in c.pending:
            try:
                stream.connect(c.dir)
            except OSError as e:
                log.warning("attach before start of %s failed: %s", c.id, e)
                stream.abandon()
        c.pending.clear()
        try:
            ctl.sendall(b'{"go": true}\n')
        except OSError:  # the supervisor died meanwhile: the next message() says so, as a StartError
            pass

    def _start_error(self, c: Record, msg: dict[str, Any]) -> str:
        text = msg.get("message") or "unknown error"
        self._callbacks.event(c, "die", exitCode=msg.get("exit_code", 128))
        for stream in c.pending:
            stream.abandon()
        c.pending.clear()
        self._table.note_exit(c)
        return f"failed to create task for container: {text}: unknown"


def _with_log(what: str, log_path: str) -> str:
    """`what` with the supervisor's last words (a traceback, a kill), so a failed start says why."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 600))
            tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
    except OSError:
        tail = []
    return f"{what} (see {log_path}){': ' + ' | '.join(tail) if tail else ''}"
