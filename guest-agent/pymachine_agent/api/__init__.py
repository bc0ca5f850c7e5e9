"""The Docker-Engine-compatible HTTP API (plus the host ↔ guest protocol) served by the guest agent.

from pymachine_agent.api import build_router, ApiServer
server = ApiServer(build_router(engine), Path("/run/pymachine/docker.sock"), tcp=("127.0.0.1", 2375))
server.start(); ...; server.stop()
"""

from __future__ import annotations

from typing import Any

from . import containers, images, resources, swarm, system
from .server import API_VERSION, MIN_API_VERSION, ApiServer, Router


def build_router(engine: Any) -> Router:
    router = Router()
    system.register(router, engine)
    containers.register(router, engine)
    images.register(router, engine)
    resources.register(router, engine)
    swarm.register(router, engine)
    return router


__all__ = ["API_VERSION", "MIN_API_VERSION", "ApiServer", "Router", "build_router"]
