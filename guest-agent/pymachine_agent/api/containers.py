"""`/containers/*` endpoints: thin translation between HTTP and the engine."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from . import bodies
from .http import ClientGone, HTTPError, Request
from .server import Router

if TYPE_CHECKING:
    from ..engine import ContainerFiles, ContainerService, ContainerStreams, ExecService
from .streams import MUX, RAW, pump_hijacked

_STREAMS = {"stdout": 1, "stderr": 2}


def register(  # noqa: C901 - one closure per endpoint
    router: Router,
    containers: ContainerService,
    streams: ContainerStreams,
    files: ContainerFiles,
    execs: ExecService,
) -> None:
    r = router.route

    @r("POST", "/containers/create")
    def create(req: Request) -> tuple[int, dict]:
        body = req.json(bodies.CONTAINER_CREATE)
        if not isinstance(body, dict):
            raise HTTPError(400, "config cannot be empty in order to create a container")
        cid, warnings = containers.create(body, req.query.get("name", ""))
        return 201, {"Id": cid, "Warnings": warnings}

    @r("GET", "/containers/json")
    def list_(req: Request) -> tuple[int, list]:
        return 200, containers.list(
            all=req.qbool("all"),
            filters=req.filters(),
            limit=req.qint("limit", -1),
            size=req.qbool("size"),
        )

    @r("GET", "/containers/{ref}/json")
    def inspect(req: Request, ref: str) -> tuple[int, dict]:
        return 200, containers.inspect(ref, size=req.qbool("size"))

    @r("POST", "/containers/{ref}/start")
    def start(req: Request, ref: str) -> int:
        req.drain()
        containers.start(ref)
        return 204

    @r("POST", "/containers/{ref}/stop")
    def stop(req: Request, ref: str) -> int:
        containers.stop(ref, timeout=req.qint("t"), signal=req.query.get("signal") or None)
        return 204

    @r("POST", "/containers/{ref}/restart")
    def restart(req: Request, ref: str) -> int:
        containers.restart(ref, timeout=req.qint("t"), signal=req.query.get("signal") or None)
        return 204

    @r("POST", "/containers/{ref}/kill")
    def kill(req: Request, ref: str) -> int:
        containers.kill(ref, req.query.get("signal") or "SIGKILL")
        return 204

    @r("POST", "/containers/{ref}/pause")
    def pause(req: Request, ref: str) -> int:
        containers.pause(ref)
        return 204

    @r("POST", "/containers/{ref}/unpause")
    def unpause(req: Request, ref: str) -> int:
        containers.unpause(ref)
        return 204

    @r("POST", "/containers/{ref}/wait")
    def wait(req: Request, ref: str) -> None:
        condition = req.query.get("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise HTTPError(400, f"invalid condition: {condition!r}")
        waiter = containers.waiter(ref, condition)  # registers before headers: no missed exit
        req.drain()
        # the CLI sends `start` only once these headers arrived: flush them now
        out = req.conn.stream(200, "application/json")
        code, error = waiter()
        body: dict[str, Any] = {"StatusCode": code, "Error": {"Message": error} if error else None}
        out.write_json(body)
        out.close()

    @r("DELETE", "/containers/{ref}")
    def remove(req: Request, ref: str) -> int:
        containers.remove(ref, force=req.qbool("force"), volumes=req.qbool("v"))
        return 204

    @r("DELETE", "/containers/{ref}/{alias}")
    def unlink(req: Request, ref: str, alias: str) -> int:
        if not req.qbool("link"):
            raise HTTPError(404, f"page not found: DELETE {req.path}")
        containers.unlink(ref, alias)
        return 204

    @r("POST", "/containers/{ref}/attach")
    def attach(req: Request, ref: str) -> None:
        session = streams.attach(
            ref,
            stdin=req.qbool("stdin"),
            stdout=req.qbool("stdout"),
            stderr=req.qbool("stderr"),
            logs=req.qbool("logs"),
            stream=req.qbool("stream"),
            detach_keys=req.query.get("detachKeys", ""),
        )
        req.drain()
        pump_hijacked(req, session, stdin=req.qbool("stdin"))

    @r("POST", "/containers/{ref}/resize")
    def resize(req: Request, ref: str) -> tuple[int, str] | int:
        streams.resize(ref, req.qint("h", 0), req.qint("w", 0))
        return 200

    @r("GET", "/containers/{ref}/logs")
    def logs(req: Request, ref: str) -> None:
        stdout, stderr = req.qbool("stdout"), req.qbool("stderr")
        if not (stdout or stderr):
            raise HTTPError(400, "Bad parameters: you must choose at least one stream")
        tail = req.query.get("tail", "all")
        pieces, tty = streams.logs(
            ref,
            follow=req.qbool("follow"),
            stdout=stdout,
            stderr=stderr,
            since=_ts(req.query.get("since")),
            until=_ts(req.query.get("until")),
            timestamps=req.qbool("timestamps"),
            tail=None if tail in ("", "all") else int(tail),
        )
        out = req.conn.stream(200, RAW if tty else MUX)
        try:
            for stream, data in pieces:
                if tty:
                    out.write(data)
                else:
                    out.write(_frame(stream, data))
            out.close()
        except ClientGone:
            pass
        finally:
            close = getattr(pieces, "close", None)
            if close:
                close()

    @r("GET", "/containers/{ref}/top")
    def top(req: Request, ref: str) -> tuple[int, dict]:
        return 200, streams.top(ref, req.query.get("ps_args") or "")

    @r("GET", "/containers/{ref}/stats")
    def stats(req: Request, ref: str) -> None:
        stream = req.qbool("stream", True)
        one_shot = req.qbool("one-shot")
        samples = streams.stats(ref, stream=stream, one_shot=one_shot)
        if not stream:
            sample = next(iter(samples))
            req.conn.send_json(200, sample)
            return
        out = req.conn.stream(200, "application/json")
        try:
            for sample in samples:
                out.write_json(sample)
            out.close()
        except ClientGone:
            pass

    @r("POST", "/containers/{ref}/rename")
    def rename(req: Request, ref: str) -> int:
        name = req.query.get("name", "")
        if not name:
            raise HTTPError(400, "new name cannot be empty")
        containers.rename(ref, name)
        return 204

    @r("POST", "/containers/{ref}/update")
    def update(req: Request, ref: str) -> tuple[int, dict]:
        warnings = containers.update(ref, req.json(bodies.CONTAINER_UPDATE))
        return 200, {"Warnings": warnings}

    @r("GET", "/containers/{ref}/changes")
    def changes(req: Request, ref: str) -> tuple[int, list]:
        return 200, files.changes(ref)

    @r("POST", "/containers/prune")
    def prune(req: Request) -> tuple[int, dict]:
        return 200, containers.prune(req.filters())

    @r("GET", "/containers/{ref}/archive")
    def archive_get(req: Request, ref: str) -> None:
        path = req.query.get("path", "")
        if not path:
            raise HTTPError(400, "path cannot be empty")
        stat, chunks = files.archive_get(ref, path, head=req.method == "HEAD")
        hdr = [("X-Docker-Container-Path-Stat", stat)]
        if req.method == "HEAD":
            req.conn.send(200, b"", "application/x-tar", headers=hdr, head_only=True)
            return
        req.conn.close_after = True  # stream the tar raw until close (what moby does)
        try:
            req.conn.write(
                req.conn._head(200, [("Content-Type", "application/x-tar"), *hdr, ("Connection", "close")])
            )
            for piece in chunks:
                req.conn.write(piece)
        finally:
            chunks.close()  # a client that left: release the container's root now, not at garbage collection

    @r("GET", "/containers/{ref}/export")
    def export(req: Request, ref: str) -> None:
        chunks = files.export(ref)
        out = req.conn.stream(200, "application/x-tar")
        try:
            for piece in chunks:
                out.write(piece)
            out.close()
        except ClientGone:
            pass
        finally:
            chunks.close()

    @r("PUT", "/containers/{ref}/archive")
    def archive_put(req: Request, ref: str) -> int:
        path = req.query.get("path", "")
        if not path:
            raise HTTPError(400, "path cannot be empty")
        try:
            files.archive_put(ref, path, req.iter_body(), no_overwrite=req.qbool("noOverwriteDirNonDir"))
        except BaseException:
            req.conn.close_after = True  # the body may be half read: this connection cannot carry another
            raise
        return 200

    @r("POST", "/containers/{ref}/exec")
    def exec_create(req: Request, ref: str) -> tuple[int, dict]:
        return 201, {"Id": execs.create(ref, req.json(bodies.EXEC_CREATE))}

    @r("POST", "/exec/{eid}/start")
    def exec_start(req: Request, eid: str) -> int | None:
        body = req.json(bodies.EXEC_START) or {}
        if body.get("Detach"):
            execs.start_detached(eid)
            req.conn.send(200, b"", "application/json")
            return None
        session = execs.attach(eid, tty=body.get("Tty"), console_size=body.get("ConsoleSize"))
        pump_hijacked(req, session, stdin=execs.wants_stdin(eid))
        return None

    @r("POST", "/exec/{eid}/resize")
    def exec_resize(req: Request, eid: str) -> int:
        execs.resize(eid, req.qint("h", 0), req.qint("w", 0))
        return 201

    @r("GET", "/exec/{eid}/json")
    def exec_inspect(req: Request, eid: str) -> tuple[int, dict]:
        return 200, execs.inspect(eid)


def _frame(stream: int, data: bytes) -> bytes:
    from .streams import frame

    return frame(stream, data)


def _ts(value: str | None) -> float | None:
    """Docker's `since`/`until`: unix seconds, possibly fractional; 0 or empty means unset."""
    if not value:
        return None
    try:
        v = float(value)
    except ValueError:
        try:
            return time.mktime(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        except ValueError:
            raise HTTPError(400, f"invalid time value {value!r}") from None
    return v or None


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
