"""What every engine service asks about a container: its state by name or ID, and the few Docker-side facts
(name, image, labels, --rm, endpoint) the engine keeps in memory for events and network set-up.

The runtime's records are the truth (the Docker-shaped Config/HostConfig ride along in
`spec.extra["docker"]`); `meta` is a cache of them rebuilt at start, so an agent restart loses nothing.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import dockerview as view
from ..network import EndpointConfig, EndpointSettings, NetworkManager, PortSpec
from ..runtime import ContainerState, Runtime
from ..runtime.errors import NotFound


class ContainerRecords:
    def __init__(self, runtime: Runtime, network: NetworkManager | None) -> None:
        self.runtime = runtime
        self.network = network
        # serialises name checks with the create/rename that takes the name, and auto-removes in progress
        self.lock = threading.RLock()
        self.meta: dict[str, dict[str, Any]] = {}  # id → {name, image, labels, auto_remove, endpoint}

    def remember(self, st: ContainerState) -> None:
        d = view.docker_of(st)
        self.meta[st.id] = {
            "name": st.name,
            "image": (d.get("Config") or {}).get("Image", ""),
            "labels": (d.get("Config") or {}).get("Labels") or {},
            "auto_remove": bool((d.get("HostConfig") or {}).get("AutoRemove")),
            "endpoint": (st.spec.extra or {}).get("endpoint") if st.spec else None,
        }

    def forget(self, cid: str) -> None:
        self.meta.pop(cid, None)

    def auto_remove(self, cid: str) -> bool:
        return bool((self.meta.get(cid) or {}).get("auto_remove"))

    def attrs(self, cid: str) -> dict[str, str]:
        """An event's attributes for the container: its labels, image and name, as dockerd sends them."""
        meta = self.meta.get(cid, {})
        return {**meta.get("labels", {}), "image": meta.get("image", ""), "name": meta.get("name", "")}

    def state(self, ref: str) -> ContainerState:
        try:
            return self.runtime.inspect(ref)
        except NotFound:
            raise NotFound(f"No such container: {ref}") from None

    def image_name(self, st: ContainerState) -> str:
        return (view.docker_of(st).get("Config") or {}).get("Image", "")

    def endpoint_config(self, cid: str) -> EndpointConfig:
        data = (self.meta.get(cid) or {}).get("endpoint") or {}
        data = dict(data)
        data["networks"] = {k: EndpointSettings(**v) for k, v in (data.get("networks") or {}).items()}
        data["ports"] = [PortSpec(**p) for p in data.get("ports") or []]
        return EndpointConfig(**data)

    def network_settings(self, st: ContainerState) -> dict[str, Any]:
        ep = self.network.endpoint(st.id) if self.network is not None and st.running else None
        ns = ep.network_settings() if ep else view.empty_network_settings()
        if not ep:
            # stopped containers still show the networks they will join at start
            endpoint = (self.meta.get(st.id) or {}).get("endpoint") or {}
            mode = endpoint.get("network_mode") or "bridge"
            names = [] if mode in ("none", "host") or mode.startswith("container:") else [mode]
            names += [n for n in endpoint.get("networks") or {} if n not in names]
            ns["Networks"] = {
                n: {"NetworkID": "", "EndpointID": "", "IPAddress": "", "Gateway": "", "Aliases": None}
                for n in names
            }
        return ns

    def volume_users(self, name: str) -> list[str]:
        suffix = f"/{name}/_data"
        return [
            st.id
            for st in self.runtime.list()
            if st.spec and any(m.type == "volume" and m.source.endswith(suffix) for m in st.spec.mounts)
        ]

    def image_users(self, image_id: str) -> list[str]:
        return [st.id for st in self.runtime.list() if view.docker_of(st).get("Image") == image_id]
