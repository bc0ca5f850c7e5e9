"""Issue 16: the guest agent has one error family. Every error class the API answers with derives from
`AgentError` and is defined in pymachine_agent/errors.py (a part may re-export it under its own name), so no
part grows its own look-alike hierarchy again; the HTTP status comes from the type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pymachine_agent
from pymachine_agent import errors
from pymachine_agent.errors import AgentError

# the HTTP framing errors carry the status of the case at hand (408, 413, 400...): the API's own, by design
ALLOWED_ELSEWHERE = {"pymachine_agent.api.wire"}


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(pymachine_agent.__path__, "pymachine_agent."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_agent_error_class_lives_in_errors_py() -> None:
    stray = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            defined_here = cls.__module__ == name and name not in (errors.__name__, *ALLOWED_ELSEWHERE)
            if defined_here and issubclass(cls, AgentError):
                stray.append(f"{name}.{cls.__name__}")
    assert not stray, f"error classes outside pymachine_agent/errors.py: {stray}"


def test_status_comes_from_the_type() -> None:
    by_status = {errors.NotFound: 404, errors.Conflict: 409, errors.BadRequest: 400, errors.Forbidden: 403}
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        for base, status in by_status.items():
            if issubclass(cls, base) and cls is not base:
                assert "status" not in vars(cls), f"{cls.__name__} sets its own status"
                assert cls.status == status, cls
    from pymachine_agent.images import ImageNotFound
    from pymachine_agent.network.model import ConflictError, ForbiddenError, InvalidParameterError
    from pymachine_agent.runtime.errors import NotFound as ContainerNotFound
    from pymachine_agent.volumes import VolumeInUse

    assert [c("x").status for c in (ImageNotFound, ContainerNotFound)] == [404, 404]
    assert [c("x").status for c in (ConflictError, VolumeInUse, ForbiddenError, InvalidParameterError)] == [
        409,
        409,
        403,
        400,
    ]
