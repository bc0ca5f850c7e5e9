"""A cluster node's engine is Debian's dockerd, not the guest agent: this turns what dockerd knows about
published ports into the guest agent's port events (docs/contracts.md §4), so the rest of the host agent
(PortTable, the forwarder) works unchanged.

dockerd does not report ports as events of their own, so the set is read from its API: the ingress ports of
Swarm services (`GET /services`, on a manager; a worker answers 503 and has none) and the published ports of
plain containers (`GET /containers/json`). It is read again whenever dockerd's `/events` stream says a
service or container changed, and every few seconds besides (a service's ingress port is allocated a moment
after its create event). A routing-mesh port answers on every node's own addresses, 127.0.0.1 included, so
forwarding the manager's loopback port is enough. There is no ack: unlike the guest agent, dockerd does not
wait for the host listener before it answers the client, so a port opens within about a second of the change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paramiko

from . import guestapi
from .streamlocal import Opener

API = "/v1.41"  # Debian 12's dockerd (20.10); the host's docker CLI negotiates down to it as well
RESCAN_S = 5.0
Published = dict[tuple[str, int], str]  # (proto, port) -> what publishes it (service or container name)


def is_dockerd_machine(config: Path) -> bool:
    """Whether the machine of this config.json is a cluster node (its engine is dockerd)."""
    try:
        return bool(json.loads(config.read_text()).get("cluster"))
    except (OSError, ValueError):
        return False


def published_ports(services: Any, containers: Any) -> Published:
    """Pure: the (proto, port) pairs published on the node from dockerd's /services and /containers/json
    answers (either may be an error body: a worker has no /services)."""
    found: Published = {}
    for svc in services if isinstance(services, list) else []:
        name = str((svc.get("Spec") or {}).get("Name") or svc.get("ID") or "")
        for p in (svc.get("Endpoint") or {}).get("Ports") or []:
            if p.get("PublishMode", "ingress") == "ingress" and p.get("PublishedPort"):
                proto = str(p.get("Protocol") or "tcp")
                if proto in ("tcp", "udp"):
                    found[(proto, int(p["PublishedPort"]))] = f"service {name}"
    for ctr in containers if isinstance(containers, list) else []:
        name = str(((ctr.get("Names") or [""])[0]).lstrip("/") or ctr.get("Id", "")[:12])
        for p in ctr.get("Ports") or []:
            proto = str(p.get("Type") or "tcp")
            if p.get("PublicPort") and proto in ("tcp", "udp"):
                found.setdefault((proto, int(p["PublicPort"])), f"container {name}")
    return found


def port_event(action: str, proto: str, port: int, owner: str) -> dict[str, Any]:
    # host_ip None: the default loopback bind (ports.normalise_host_ip); the guest side is the published port
    return {"type": "port", "action": action, "id": "", "proto": proto, "host_ip": None,
            "host_port": port, "guest_port": port, "container": owner}  # fmt: skip


def diff(old: Published, new: Published) -> list[dict[str, Any]]:
    """Pure: the remove and add events that take the forwarded set from `old` to `new`."""
    out = [
        port_event("remove", proto, port, old[(proto, port)])
        for proto, port in sorted(old.keys() - new.keys())
    ]
    out += [
        port_event("add", proto, port, new[(proto, port)]) for proto, port in sorted(new.keys() - old.keys())
    ]
    return out


class Dockerd:
    def __init__(self, opener: Opener) -> None:
        self.opener = opener

    def _get(self, transport: paramiko.Transport, path: str) -> tuple[int, Any]:
        return guestapi.request(self.opener.open(transport), "GET", API + path)

    def info(self, transport: paramiko.Transport) -> dict[str, Any]:
        status, body = self._get(transport, "/info")
        if status != 200 or not isinstance(body, dict):
            raise guestapi.GuestApiError(f"dockerd's GET /info answered {status}")
        swarm = body.get("Swarm") or {}
        return {
            "engine": "dockerd",
            "version": body.get("ServerVersion"),
            "swarm": {k: swarm.get(k) for k in ("LocalNodeState", "NodeID", "ControlAvailable", "NodeAddr")},
        }

    def published(self, transport: paramiko.Transport) -> Published:
        _, services = self._get(transport, "/services")
        _, containers = self._get(transport, "/containers/json")
        return published_ports(services, containers)

    def port_events(self, transport: paramiko.Transport) -> Iterator[dict[str, Any] | None]:
        """hello, an add per published port, None (resync done); then the changes, as long as the stream
        of dockerd's /events lives."""
        yield {"type": "hello"}
        current = self.published(transport)
        yield from diff({}, current)
        yield None
        filters = quote(json.dumps({"type": ["service", "container"]}))
        stream = guestapi.stream_events(self.opener.open(transport), 0.5, f"{API}/events?filters={filters}")
        dirty, scanned = False, time.monotonic()
        for item in stream:
            dirty = dirty or item is not None
            if item is None and (dirty or time.monotonic() - scanned > RESCAN_S):
                new = self.published(transport)
                yield from diff(current, new)
                current, dirty, scanned = new, False, time.monotonic()
