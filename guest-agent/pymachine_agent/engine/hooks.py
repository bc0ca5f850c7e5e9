"""What the engine does when its parts report something: the runtime's container events (start, die,
destroy...) and its network hooks (a container's netns is ready, its endpoint goes), the network's port
events.

Each turns into events on the bus, health probes started or stopped, published ports withdrawn, the host
agent told which shared paths to watch, a `--rm` container removed. The Engine hands these methods to the
runtime and the network once every part exists (engine/__init__.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .. import dockerview as view
from ..events import EventBus, PortBroker
from ..fsevents import ChangeMirror
from ..health import HealthMonitor
from ..network import NetworkManager
from ..runtime import ContainerState, Runtime
from ..shares import Shares
from .linking import Links
from .records import ContainerRecords

log = logging.getLogger("pymachine_agent.engine")


class RuntimeHooks:
    def __init__(
        self,
        *,
        runtime: Runtime,
        records: ContainerRecords,
        network: NetworkManager | None,
        links: Links,
        events: EventBus,
        ports: PortBroker,
        health: HealthMonitor,
        shares: Shares,
        changes: ChangeMirror,
        auto_remove: Callable[[str], None],
    ) -> None:
        """`auto_remove(cid)`: removes a `--rm` container that exited (ContainerService.auto_remove)."""
        self.runtime = runtime
        self.records = records
        self.network = network
        self.links = links
        self.events = events
        self.ports = ports
        self.health = health
        self.shares = shares
        self.changes = changes
        self.auto_remove = auto_remove

    def on_event(self, cid: str, action: str, attributes: dict[str, str]) -> None:
        meta = self.records.meta.get(cid, {})
        attrs = self.records.attrs(cid)
        attrs.update(attributes or {})
        if action == "rename":
            meta["name"] = attrs.get("name", meta.get("name"))
        self.events.publish("container", action, cid, attrs)
        if action in ("start", "die", "destroy"):
            self.watch_update()
        if action == "start":
            self.health_watch(self.records.state(cid))
        elif action == "die":
            self.health.stop(cid)
        elif action == "destroy":
            self.health.forget(cid)
        if action == "die":
            self.ports.withdraw(cid)
            if meta.get("auto_remove"):
                threading.Thread(target=self.auto_remove, args=(cid,), daemon=True).start()
        if action == "destroy":
            self.records.forget(cid)

    def health_watch(self, st: ContainerState) -> None:
        config = view.docker_of(st).get("Config") or {}
        self.health.watch(st.id, config.get("Healthcheck"), config.get("Shell"))

    def on_netns(self, cid: str, pid: int) -> None:
        if self.network is None:
            return
        config = self.records.endpoint_config(cid)
        config.extra_hosts = [*config.extra_hosts, *self.links.hosts(cid)]
        info = self.network.attach(cid, pid, config)
        # The runtime bind-mounted its default /etc files before this hook ran; rewrite them in place (same
        # inode, so the container sees it) with what the network set up: embedded DNS, aliases, hosts.
        ctr_dir = Path(self.runtime.root) / cid
        for name, content in (("resolv.conf", info.resolv_conf), ("hosts", info.hosts)):
            path = ctr_dir / name
            if content and path.exists():
                with open(path, "r+") as f:
                    f.truncate(0)
                    f.write(content)

    def on_teardown(self, cid: str) -> None:
        if self.network is not None:
            try:
                self.network.detach(cid)
            except Exception as exc:
                log.warning("network detach of %s failed: %s", cid[:12], exc)

    def on_port_event(self, event: dict) -> None:
        """Called by the network for every publish/unpublish; `add` waits for the host agent's ack."""
        if event.get("action") == "add":
            self.ports.add(event)
        else:
            self.ports.remove(event)

    def watch_update(self) -> None:
        """Tell the host agent which shared host paths running containers bind-mount now."""
        if self.shares.enabled:
            self.changes.refresh(
                lambda: self.shares.watched(
                    m for st in self.runtime.list() if st.running and st.spec for m in st.spec.mounts
                )
            )
