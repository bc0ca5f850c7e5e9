"""The engine: a thin object that builds the agent's parts and composes typed services over them.

    engine = Engine(state_dir, network=True, ...); engine.start()
    engine.containers   ContainerService  create/list/inspect/start/stop/wait/remove/...   (containers.py)
    engine.streams      ContainerStreams  attach/logs/top/stats/resize                      (streams.py)
    engine.files        ContainerFiles    docker cp, export, diff                           (files.py)
    engine.execs        ExecService       docker exec                                        (execs.py)
    engine.images       ImageService      the image store + events, in-use, commit           (images.py)
    engine.networks     NetworkService    docker network ...                                 (networks.py)
    engine.volumes      VolumeService     docker volume ...                                  (volumes.py)
    engine.system       SystemService     /version, /info, /system/df                        (system.py)

Each service gets what it uses passed in; the API modules (pymachine_agent/api/) each receive the services
they speak for. Below the services sit the parts: the runtime, the image store, the network manager, the
volume store, the event bus and port broker, the shares. What the runtime and the network report back (a
container died, its netns is ready, a port was published) is handled in hooks.py, wired in here once
everything exists.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from .. import health
from ..errors import Unavailable
from ..events import EventBus, PortBroker
from ..fsevents import ChangeMirror
from ..images import ImageStore
from ..network import NetworkManager
from ..runtime import Runtime
from ..shares import Shares
from ..volumes import VolumeStore
from .containers import ContainerService
from .execs import ExecService
from .files import ContainerFiles
from .hooks import RuntimeHooks
from .images import ImageService
from .linking import Links
from .networks import NetworkService
from .records import ContainerRecords
from .streams import ContainerStreams
from .system import SystemService
from .volumes import VolumeService

READY_TIMEOUT_S = 120.0  # a `modprobe -a` took up to 14 s at a host load of 30: generous, yet not forever


class Engine:
    def __init__(
        self,
        state_dir: Path | str,
        *,
        ack_timeout: float = 10.0,
        network: bool = True,
        insecure_registries: Iterable[str] = (),
        default_host_ip: str = "",
        shares: Shares | None = None,
        young_ports: bool = True,
    ) -> None:
        """`default_host_ip`: where a port published without a HostIp is bound, as `docker ps`/inspect show
        it. Inside a machine the host agent listens on 127.0.0.1 for those (published ports stay on the
        user's computer unless asked), and the machine's agent.json says so; an engine without settings
        (tests on this host, an ssh-provisioned host) binds them on every guest address, Docker's 0.0.0.0,
        which the empty default shows."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # -- the parts ------------------------------------------------------------------------------------
        self.events = EventBus()
        self.ports = PortBroker(ack_timeout=ack_timeout)
        # bind sources are host paths in shares when agent.json lists them (shares.py); their changes on the
        # host reach inotify here through the host agent (fsevents.py)
        self.shares = shares or Shares(None)
        self.changes = ChangeMirror(self.ports.announce)
        # registries (host[:port]) reached over plain HTTP, from agent.json (loopback ones always are)
        image_store = ImageStore(self.state_dir / "images", insecure_registries=insecure_registries)
        self.network: NetworkManager | None = (
            NetworkManager(
                self.state_dir / "network", default_host_ip=default_host_ip, young_ports=young_ports
            )
            if network
            else None
        )
        self.runtime = Runtime(self.state_dir / "runtime")
        records = ContainerRecords(self.runtime, self.network)
        volume_store = VolumeStore(self.state_dir / "volumes", in_use=records.volume_users)
        self.health = health.HealthMonitor(
            run_probe=lambda cid, argv, timeout: health.exec_probe(self.runtime, cid, argv, timeout),
            is_running=lambda cid: records.state(cid).status == "running",
            changed=lambda cid, status: self.hooks.on_event(cid, f"health_status: {status}", {}),
        )
        links = Links(self.runtime, records)
        # -- the services -----------------------------------------------------------------------------------
        self.execs = ExecService(runtime=self.runtime, records=records, events=self.events)
        self.containers = ContainerService(
            runtime=self.runtime,
            records=records,
            images=image_store,
            volumes=volume_store,
            network=self.network,
            shares=self.shares,
            events=self.events,
            ports=self.ports,
            health=self.health,
            execs=self.execs,
            links=links,
        )
        self.streams = ContainerStreams(
            runtime=self.runtime, records=records, events=self.events, network=self.network
        )
        self.files = ContainerFiles(records)
        self.images = ImageService(
            store=image_store, runtime=self.runtime, records=records, events=self.events
        )
        self.networks = NetworkService(network=self.network, records=records, events=self.events)
        self.volumes = VolumeService(store=volume_store, events=self.events)
        self.system = SystemService(
            state_dir=self.state_dir,
            runtime=self.runtime,
            records=records,
            images=image_store,
            volumes=volume_store,
        )
        # -- what the runtime and the network report, handled once every part above exists ------------------
        self.hooks = RuntimeHooks(
            runtime=self.runtime,
            records=records,
            network=self.network,
            links=links,
            events=self.events,
            ports=self.ports,
            health=self.health,
            shares=self.shares,
            changes=self.changes,
            auto_remove=self.containers.auto_remove,
        )
        self.runtime.callbacks.on_netns = self.hooks.on_netns
        self.runtime.callbacks.on_teardown = self.hooks.on_teardown
        self.runtime.callbacks.on_event = self.hooks.on_event
        if self.network is not None:
            self.network.on_port_event = self.hooks.on_port_event
        self.records = records
        # set by `start` (or `fail`): the API holds every request that needs it (api/__init__.py)
        self.ready = threading.Event()
        self.not_ready: str | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until `start` has run (on a cold boot it runs once the machine's kernel modules are in,
        kernelgate.py); raises Unavailable (503) when it failed or takes longer than `timeout`."""
        if not self.ready.wait(timeout):
            raise Unavailable(
                f"the engine is still starting after {timeout:.0f} s: the machine's kernel modules are not"
                " loaded yet (see /run/modprobe.log in the machine)"
            )
        if self.not_ready is not None:
            raise Unavailable(self.not_ready)

    def fail(self, reason: str) -> None:
        """The engine cannot start (its kernel modules failed to load): held requests get `reason`."""
        self.not_ready = reason
        self.ready.set()

    def start(self) -> None:
        for st in self.runtime.list():
            self.records.remember(st)
        if self.network is not None:
            self.network.start(running={st.id: st.pid for st in self.runtime.list() if st.pid})
            for port in self.network.published_ports():  # a reconnecting host agent gets them in its resync
                self.ports.restore(port.event("add"))
        self.runtime.reconcile()
        self.hooks.watch_update()
        for st in self.runtime.list():
            if st.running:
                self.hooks.health_watch(st)
        self.ready.set()

    def close(self) -> None:
        self.runtime.close()
        if self.network is not None:
            self.network.close()


__all__ = [
    "ContainerFiles",
    "ContainerService",
    "ContainerStreams",
    "Engine",
    "ExecService",
    "ImageService",
    "NetworkService",
    "SystemService",
    "VolumeService",
]
