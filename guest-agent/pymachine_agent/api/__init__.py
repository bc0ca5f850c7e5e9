"""The Docker-Engine-compatible HTTP API (plus the host ↔ guest protocol) served by the guest agent.

from pymachine_agent.api import build_router, ApiServer
server = ApiServer(build_router(engine), Path("/run/pymachine/docker.sock"), tcp=("127.0.0.1", 2375))
server.start(); ...; server.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import protocol
from . import containers, images, resources, swarm, system
from .server import API_VERSION, MIN_API_VERSION, ApiServer, Router

if TYPE_CHECKING:
    from ..engine import Engine


# What answers before the engine has started (on a cold boot it starts once the machine's kernel modules are
# in, a second or more after the agent answers: kernelgate.py): a client's first `docker version`, the image
# store (a pull or load of the image of a first `docker run` need no kernel module) and the host agent's own
# protocol (its link-up must not wait). Everything else, containers and networks first, waits for the start;
# so do `info` and `ps`, whose counts and states the start reconciles with what survived the boot.
ANSWERS_BEFORE_START = (
    ("GET", "/_ping"),
    ("GET", "/version"),
    ("GET", "/events"),
    ("GET", "/images/json"),
    ("GET", "/images/{name:path}/json"),
    ("GET", "/images/{name:path}/history"),
    ("POST", "/images/create"),
    ("POST", "/images/load"),
    ("POST", "/auth"),
)


def build_router(engine: Engine) -> Router:
    """Each API module gets the services it speaks for (engine/__init__.py lists them)."""
    router = Router()
    system.register(router, engine.system, engine.events, engine.ports, engine.changes, engine.shares)
    containers.register(router, engine.containers, engine.streams, engine.files, engine.execs)
    images.register(router, engine.images, engine.containers)
    resources.register(router, engine.networks, engine.volumes)
    swarm.register(router)
    router.hold(engine.wait_ready, answers_before_start)
    return router


def answers_before_start(method: str, pattern: str) -> bool:
    return (method, pattern) in ANSWERS_BEFORE_START or pattern.startswith(protocol.API_PREFIX)


__all__ = ["API_VERSION", "MIN_API_VERSION", "ApiServer", "Router", "build_router"]
