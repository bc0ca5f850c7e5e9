"""The swarm endpoints of an engine that is not part of a swarm: dockerd's 503 answers.

Our engine never runs swarm mode (issue 18 builds clusters from machines running moby). dockerd with
swarm inactive answers every swarm, node, service, task, secret and config call with 503 and one of two
messages, and clients depend on that: docker-py's `leave_swarm(force=True)` treats the 503 of `/swarm/leave`
as "nothing to leave"; a 404's "page not found" breaks them. Init and join, which dockerd would carry out,
are refused with 503 as well, with the reason.
"""

from __future__ import annotations

from typing import Any

from .http import HTTPError, Request
from .server import Router

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node '
    "to swarm and try again."
)
NOT_IN_SWARM = "This node is not part of a swarm"
NO_SWARM_MODE = 'swarm mode is not supported by pymachine\'s engine (see docs/api.md, "Swarm")'

# (method, path) → message; dockerd's choice of message per call (daemon/cluster: errNoManager / errNoSwarm)
_NOT_A_MANAGER_CALLS = [
    ("GET", "/swarm"),
    ("POST", "/swarm/update"),
    ("GET", "/swarm/unlockkey"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{id}"),
    ("DELETE", "/nodes/{id}"),
    ("POST", "/nodes/{id}/update"),
    ("GET", "/services"),
    ("POST", "/services/create"),
    ("GET", "/services/{id}"),
    ("DELETE", "/services/{id}"),
    ("POST", "/services/{id}/update"),
    ("GET", "/services/{id}/logs"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks/{id}/logs"),
    ("GET", "/secrets"),
    ("POST", "/secrets/create"),
    ("GET", "/secrets/{id}"),
    ("DELETE", "/secrets/{id}"),
    ("POST", "/secrets/{id}/update"),
    ("GET", "/configs"),
    ("POST", "/configs/create"),
    ("GET", "/configs/{id}"),
    ("DELETE", "/configs/{id}"),
    ("POST", "/configs/{id}/update"),
]
_NOT_IN_SWARM_CALLS = [("POST", "/swarm/leave"), ("POST", "/swarm/unlock")]
_NO_SWARM_MODE_CALLS = [("POST", "/swarm/init"), ("POST", "/swarm/join")]


def register(router: Router) -> None:
    for calls, message in (
        (_NOT_A_MANAGER_CALLS, NOT_A_MANAGER),
        (_NOT_IN_SWARM_CALLS, NOT_IN_SWARM),
        (_NO_SWARM_MODE_CALLS, NO_SWARM_MODE),
    ):
        for method, pattern in calls:
            router.add(method, pattern, _unavailable(message))


def _unavailable(message: str) -> Any:
    def handler(req: Request, **_params: str) -> None:
        raise HTTPError(503, message)

    return handler
