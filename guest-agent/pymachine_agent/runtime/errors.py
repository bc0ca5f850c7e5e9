"""Errors the runtime raises; the API layer maps them onto HTTP status codes (404, 409, 500)."""

from __future__ import annotations

from pymachine_agent.errors import AgentError


class RuntimeErr(AgentError):
    """A runtime failure with a message fit for `docker` to print. `status` is the HTTP code it maps to."""


class NotFound(RuntimeErr):
    status = 404


class Conflict(RuntimeErr):
    """The container is in the wrong state for the request (e.g. removing a running container)."""

    status = 409


class StartError(RuntimeErr):
    """The container could not start; `exit_code` is what Docker reports (127 not found, 126 not runnable)."""

    def __init__(self, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.exit_code = exit_code
