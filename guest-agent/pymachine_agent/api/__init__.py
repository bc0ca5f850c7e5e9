"""The Docker-Engine-compatible HTTP API (plus the host ↔ guest protocol) served by the guest agent.

from pymachine_agent.api import build_router, ApiServer
server = ApiServer(build_router(engine), Path("/run/pymachine/docker.sock"), tcp=("127.0.0.1", 2375))
server.start(); ...; server.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import containers, images, resources, swarm, system
from .server import API_VERSION, MIN_API_VERSION, ApiServer, Router

if TYPE_CHECKING:
    from ..engine import Engine


def build_router(engine: Engine) -> Router:
    """Each API module gets the services it speaks for (engine/__init__.py lists them)."""
    router = Router()
    system.register(router, engine.system, engine.events, engine.ports, engine.changes, engine.shares)
    containers.register(router, engine.containers, engine.streams, engine.files, engine.execs)
    images.register(router, engine.images, engine.containers)
    resources.register(router, engine.networks, engine.volumes)
    swarm.register(router)
    return router


__all__ = ["API_VERSION", "MIN_API_VERSION", "ApiServer", "Router", "build_router"]
