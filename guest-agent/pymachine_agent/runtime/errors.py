"""The runtime's errors, under the names its callers use; the classes live in pymachine_agent/errors.py
(one family for the whole agent, HTTP status by type)."""

from __future__ import annotations

from pymachine_agent.errors import ContainerConflict as Conflict
from pymachine_agent.errors import ContainerNotFound as NotFound
from pymachine_agent.errors import RuntimeErr, StartError

__all__ = ["Conflict", "NotFound", "RuntimeErr", "StartError"]
