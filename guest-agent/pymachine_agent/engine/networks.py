"""The network service: `docker network` create/ls/inspect/rm/prune/connect/disconnect with their events,
on the network manager (pymachine_agent/network/) — absent when the agent runs with --no-network."""

from __future__ import annotations

from typing import Any

from ..errors import AgentError, NetworkNotFound
from ..events import EventBus
from ..network import EndpointSettings, NetworkManager
from .records import ContainerRecords


class NetworkService:
    def __init__(
        self, *, network: NetworkManager | None, records: ContainerRecords, events: EventBus
    ) -> None:
        self.network = network
        self.records = records
        self.events = events

    def _manager(self) -> NetworkManager:
        if self.network is None:
            raise AgentError("networking is disabled in this engine", 501)
        return self.network

    def _publish(self, action: str, ref: str, attrs: dict[str, str]) -> None:
        info = self._manager().inspect_network(ref)
        self.events.publish("network", action, info["Id"], {**attrs, "name": info["Name"]})

    def create(self, name: str, **options: Any) -> dict[str, Any]:
        """`options`: NetworkManager.create_network's keywords (driver, subnet, gateway, internal, ...)."""
        result = self._manager().create_network(name, **options)
        self.events.publish("network", "create", result["Id"], {"name": name, "type": "bridge"})
        return result

    def remove(self, ref: str) -> None:
        net = self._manager()
        info = net.inspect_network(ref)
        net.remove_network(ref)
        self.events.publish("network", "destroy", info["Id"], {"name": info["Name"], "type": "bridge"})

    def prune(self) -> dict[str, Any]:
        return self._manager().prune_networks()

    def _configured_networks(self, cid: str) -> dict[str, Any]:
        """Networks a container joins at start from its create request: {network id: endpoint dict}."""
        ep = (self.records.meta.get(cid) or {}).get("endpoint") or {}
        out: dict[str, Any] = {}
        refs = [ep.get("network_mode") or "bridge", *(ep.get("networks") or {})]
        for ref in refs:
            try:
                out[self.network.inspect_network(ref)["Id"]] = ref
            except Exception:
                continue
        return out

    def connect(self, ref: str, container: str, settings: EndpointSettings) -> str:
        cid = self._connect(self._manager(), ref, container, settings)
        self._publish("connect", ref, {"container": cid})
        return cid

    def disconnect(self, ref: str, container: str, force: bool = False) -> str:
        cid = self._disconnect(self._manager(), ref, container, force)
        self._publish("disconnect", ref, {"container": cid})
        return cid

    def _connect(self, net: NetworkManager, ref: str, container: str, settings: EndpointSettings) -> str:
        st = self.records.state(container)
        net_id = net.inspect_network(ref)["Id"]
        configured = self._configured_networks(st.id)
        if not st.running and net_id in configured:
            # compose re-connects a created container to its own network to set aliases: merge them
            ep = self.records.meta[st.id]["endpoint"]
            entry = ep.setdefault("networks", {}).setdefault(
                configured[net_id], {"aliases": [], "ipv4_address": ""}
            )
            entry["aliases"] = list(dict.fromkeys([*(entry.get("aliases") or []), *settings.aliases]))
            return st.id
        net.connect(ref, st.id, settings)
        return st.id

    def _disconnect(self, net: NetworkManager, ref: str, container: str, force: bool) -> str:
        st = self.records.state(container)
        net_id = net.inspect_network(ref)["Id"]
        if not st.running and net_id in self._configured_networks(st.id):
            net.disconnect(ref, st.id, force=True)  # drop a remembered connect, if any
            return st.id
        net.disconnect(ref, st.id, force=force)
        return st.id

    def list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        if self.network is None:
            return []
        return self.network.list_networks(filters)

    def inspect(self, ref: str) -> dict[str, Any]:
        if self.network is None:
            raise NetworkNotFound(f"network {ref} not found")
        return self.network.inspect_network(ref)
