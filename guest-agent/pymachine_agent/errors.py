"""The guest agent's one error type: what went wrong, in words `docker` prints, and the HTTP status the
Docker API answers with. Every part's errors (runtime, images, volumes, networks, shares, archives, the API's
own framing errors) derive from `AgentError`, so the API turns any of them into `{"message": ...}` with its
status in one place (api/server.py) and anything else is a bug, answered 500 with a traceback in the log.

Subclasses set `status` as a class attribute; the few whose status depends on the case pass it in."""

from __future__ import annotations

import errno


class AgentError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(AgentError):
    status = 404


class Conflict(AgentError):
    status = 409


class BadRequest(AgentError):
    status = 400


def no_space_message(exc: OSError) -> str:
    """What a write that met a full disk tells the client (Docker says "no space left on device" too)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return (
        f"no space left on device{where}: the VM's disk is full; free space with docker rm, "
        "docker image prune or docker system prune, or give the machine a larger disk"
    )


def client_message(exc: BaseException) -> str:
    """The message a client sees for `exc` in a stream that already started (pull, load, push)."""
    if isinstance(exc, AgentError):
        return exc.message or str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return no_space_message(exc)
    return str(exc)
