"""The volume service: `docker volume` create/ls/inspect/rm/prune with their events, on the volume store
(pymachine_agent/volumes.py), which container create also uses directly for `-v name:/path`."""

from __future__ import annotations

from typing import Any

from ..events import EventBus
from ..volumes import VolumeStore


class VolumeService:
    def __init__(self, *, store: VolumeStore, events: EventBus) -> None:
        self.store = store
        self.events = events

    def _publish(self, action: str, name: str) -> None:
        self.events.publish("volume", action, name, {"driver": "local"})

    def list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return self.store.list(filters)

    def create(self, name: str, labels: dict | None, options: dict | None) -> dict[str, Any]:
        volume = self.store.create(name, labels=labels, options=options)
        self._publish("create", volume["Name"])
        return volume

    def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        result = self.store.prune(filters)
        for name in result["VolumesDeleted"]:
            self._publish("destroy", name)
        return result

    def inspect(self, name: str) -> dict[str, Any]:
        return self.store.inspect(name)

    def remove(self, name: str, force: bool = False) -> None:
        self.store.remove(name, force=force)
        self._publish("destroy", name)
