"""Container networking in the guest: bridges, veth endpoints, NAT, published ports, embedded DNS.

Public API (everything else in this package is internal):

    mgr = NetworkManager(state_dir, on_port_event=engine_callback)   # one per agent
    mgr.start(running={container_id: pid, ...})   # at agent start: default networks, nft table, reconcile

    # Docker network CRUD (return Docker's JSON shapes; raise NetworkError subclasses carrying .status)
    mgr.create_network(name, driver="bridge", subnet="", gateway="", internal=False, labels=None,
                       options=None, check_duplicate=True) -> {"Id": ..., "Warning": ""}
    mgr.list_networks(filters=None) -> [network json, ...]
    mgr.inspect_network(name_or_id) -> network json
    mgr.remove_network(name_or_id) -> None
    mgr.prune_networks() -> {"NetworksDeleted": [...]}
    mgr.connect(name_or_id, container_id, EndpointSettings) -> None   # hot-plugs when the container runs
    mgr.disconnect(name_or_id, container_id, force=False) -> None

    # Runtime hooks
    mgr.netns_path_for(network_mode) -> str | None   # "container:<id>" -> /proc/<pid>/ns/net to setns into
    mgr.attach(container_id, pid, EndpointConfig) -> EndpointInfo      # after init is in its new netns
        # honours ports + publish_all/exposed (-P); the runtime then writes info.etc_files() into the
        # container: info.write_etc_files(spec.etc_files) rewrites the bind-mounted files in place
    mgr.detach(container_id) -> None                                     # on stop (keeps connect config)
    mgr.forget(container_id) -> None                                     # on remove (detach + drop config)
    mgr.endpoint(container_id) -> EndpointInfo | None                    # for inspect
    mgr.published_ports() -> [PublishedPort, ...]                        # for the events resync
    mgr.close() -> None                                                  # agent shutdown (state stays)

Port events: `on_port_event(event: dict)` is called synchronously for every publish ("add") inside `attach`
and every unpublish ("remove") inside `detach`; the event is docs/contracts.md §4's port event without an `id`
(the engine adds it). If the callback raises (e.g. the host refused the ack), `attach` unpublishes everything
it did, tears the endpoint down and re-raises, so the start fails with the host's error.

Pure helpers: `ports.parse_publish("127.0.0.1:8080:80/udp")`, `ports.from_port_bindings(...)`.
"""

from __future__ import annotations

from .manager import NetworkManager
from .model import (
    Attachment,
    ConflictError,
    EndpointConfig,
    EndpointInfo,
    EndpointSettings,
    ForbiddenError,
    InvalidParameterError,
    NetworkError,
    NotFoundError,
    PortClashError,
    PortSpec,
    PublishedPort,
)

__all__ = [
    "Attachment",
    "ConflictError",
    "EndpointConfig",
    "EndpointInfo",
    "EndpointSettings",
    "ForbiddenError",
    "InvalidParameterError",
    "NetworkError",
    "NetworkManager",
    "NotFoundError",
    "PortClashError",
    "PortSpec",
    "PublishedPort",
]
