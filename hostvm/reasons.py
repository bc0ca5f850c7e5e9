"""Why a connection failed, in words, from the exception chain (never its repr).

docker-py wraps the real cause several layers deep: requests' ConnectionError holds urllib3's ProtocolError or
MaxRetryError, which holds `('Connection aborted.', ChannelException(2, 'Connect failed'))`. Printed as it is,
that reaches people as Python internals. `plain_reason` finds the innermost cause it knows by its type.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator


def _chain(exc: BaseException, depth: int = 0) -> Iterator[BaseException]:
    """The exception and everything it wraps (cause, context, exception args, urllib3's `reason`)."""
    if depth > 8:
        return
    yield exc
    inner = [exc.__cause__, exc.__context__, getattr(exc, "reason", None), *getattr(exc, "args", ())]
    for item in inner:
        if isinstance(item, BaseException) and item is not exc:
            yield from _chain(item, depth + 1)
        elif isinstance(item, tuple):
            for sub in item:
                if isinstance(sub, BaseException):
                    yield from _chain(sub, depth + 1)


def _known(exc: BaseException) -> str | None:
    name = type(exc).__name__
    if name == "ChannelException":  # paramiko: the SSH server could not open the forwarded socket
        return "the machine refused the connection to its engine (is the guest agent running?)"
    if isinstance(exc, socket.gaierror):
        return "the registry's name could not be resolved (no network, or no DNS for it)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, FileNotFoundError):
        return "no engine socket (the machine's host agent is not forwarding it)"
    if isinstance(exc, (TimeoutError, socket.timeout)) or name in ("ReadTimeout", "ConnectTimeout"):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.errno is not None:
        return (exc.strerror or errno.errorcode.get(exc.errno, "")).lower() or None
    return None


def plain_reason(exc: BaseException) -> str:
    """The innermost known cause as words; else the exception's own text (without its type's name)."""
    found = None
    for item in _chain(exc):
        found = _known(item) or found
    if found:
        return found
    text = str(exc).strip()
    return text or type(exc).__name__
