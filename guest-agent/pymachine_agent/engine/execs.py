"""The exec service: `docker exec` sessions. They live in memory only, as in dockerd: an agent restart
forgets them (their processes die with the container's, or run on unwatched)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from ..dockerspec import BadParameter
from ..events import EventBus
from ..runtime import ExecSpec, Runtime
from ..runtime.errors import Conflict, NotFound
from ..stdio import ExecSession
from .records import ContainerRecords


@dataclass
class ExecRecord:
    id: str
    container: str
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    process: Any = None
    started: bool = False
    detached: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class ExecService:
    def __init__(self, *, runtime: Runtime, records: ContainerRecords, events: EventBus) -> None:
        self.runtime = runtime
        self.records = records
        self.events = events
        self.sessions: dict[str, ExecRecord] = {}

    def running_in(self, cid: str) -> list[str]:
        """The IDs of the container's execs that run now (inspect's ExecIDs)."""
        return [eid for eid, e in self.sessions.items() if e.container == cid and e.running]

    def forget_container(self, cid: str) -> None:
        """The container was removed: its execs go with it."""
        for eid in [eid for eid, rec in self.sessions.items() if rec.container == cid]:
            self.sessions.pop(eid, None)

    def create(self, ref: str, body: dict[str, Any]) -> str:
        st = self.records.state(ref)
        if st.status != "running":
            if st.status == "paused":
                raise Conflict(f"container {st.id} is paused, unpause the container before exec")
            raise Conflict(f"container {st.id} is not running")
        if not body.get("Cmd"):
            raise BadParameter("No exec command specified")
        eid = secrets.token_hex(32)
        self.sessions[eid] = ExecRecord(eid, st.id, body)
        self.events.publish(
            "container", f"exec_create: {' '.join(body['Cmd'])}", st.id, self.records.attrs(st.id)
        )
        return eid

    def _get(self, eid: str) -> ExecRecord:
        rec = self.sessions.get(eid)
        if rec is None:
            raise NotFound(f"No such exec instance: {eid}")
        return rec

    def _spawn(self, rec: ExecRecord, detach: bool) -> Any:
        if rec.started:
            raise Conflict(f"Exec {rec.id} has already been started")
        st = self.records.state(rec.container)
        if st.status != "running":
            raise Conflict(f"container {st.id} is not running")
        cfg = rec.config
        spec = ExecSpec(
            argv=list(cfg["Cmd"]),
            env=list(cfg.get("Env") or []),
            user=cfg.get("User") or "",
            workdir=cfg.get("WorkingDir") or "",
            tty=bool(cfg.get("Tty")),
            console_size=[int(n) for n in (cfg.get("ConsoleSize") or [])[:2]],
            stdin=bool(cfg.get("AttachStdin")) and not detach,
            privileged=bool(cfg.get("Privileged")),
            detach=detach,
        )
        rec.started, rec.detached = True, detach
        proc = self.runtime.exec(st.id, spec)
        rec.process, rec.pid, rec.running = proc, getattr(proc, "pid", 0), True
        self.events.publish(
            "container", f"exec_start: {' '.join(cfg['Cmd'])}", st.id, self.records.attrs(st.id)
        )
        return proc

    def _finished(self, rec: ExecRecord, code: int) -> None:
        rec.exit_code, rec.running = code, False
        rec.done.set()
        self.events.publish(
            "container",
            "exec_die",
            rec.container,
            {**self.records.attrs(rec.container), "execID": rec.id, "exitCode": str(code)},
        )

    def start_detached(self, eid: str) -> None:
        rec = self._get(eid)
        proc = self._spawn(rec, detach=True)

        def reap() -> None:
            self._finished(rec, int(proc.wait()))

        threading.Thread(target=reap, daemon=True).start()

    def wants_stdin(self, eid: str) -> bool:
        return bool(self._get(eid).config.get("AttachStdin"))

    def attach(self, eid: str, tty: bool | None = None, console_size: list[int] | None = None) -> Any:
        rec = self._get(eid)
        if console_size:  # exec start's ConsoleSize wins over exec create's, as in dockerd
            rec.config["ConsoleSize"] = console_size
        proc = self._spawn(rec, detach=False)
        return ExecSession(proc, bool(rec.config.get("Tty")), on_exit=lambda code: self._finished(rec, code))

    def resize(self, eid: str, height: int, width: int) -> None:
        rec = self._get(eid)
        if rec.process is not None and hasattr(rec.process, "resize"):
            try:
                rec.process.resize(height, width)
            except OSError:
                pass

    def inspect(self, eid: str) -> dict[str, Any]:
        rec = self._get(eid)
        cfg = rec.config
        if rec.started and not rec.detached and not rec.done.is_set():
            # the CLI inspects right after the stream ends: let the reaper record it. A detached exec is
            # inspected while it runs (Running, ExitCode null), as dockerd answers.
            rec.done.wait(2.0)
        cmd = list(cfg.get("Cmd") or [])
        return {
            "ID": rec.id,
            "Running": rec.running,
            "ExitCode": rec.exit_code,
            "ProcessConfig": {
                "tty": bool(cfg.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(cfg.get("Privileged")),
                "user": cfg.get("User") or "",
            },
            "OpenStdin": bool(cfg.get("AttachStdin")),
            "OpenStderr": bool(cfg.get("AttachStderr")),
            "OpenStdout": bool(cfg.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": rec.container,
            "DetachKeys": cfg.get("DetachKeys") or "",
            "Pid": rec.pid,
        }
