"""NetworkManager: the one object the engine and the runtime talk to for container networking."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .model import EndpointConfig, EndpointInfo, EndpointSettings, PublishedPort

PortEventCallback = Callable[[dict[str, Any]], None]

DEFAULT_POOLS: tuple[tuple[str, int], ...] = (
    ("172.18.0.0/15", 16),
    ("172.20.0.0/14", 16),
    ("192.168.0.0/16", 20),
)


class NetworkManager:
    """Owns every network record, endpoint, nftables rule, published port and DNS listener of one agent.

    Thread-safe: every public method takes one lock. State lives under `state_dir` (networks/*.json,
    endpoints/*.json, written atomically), so a restarted agent can reconcile with the kernel in `start`.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        on_port_event: PortEventCallback | None = None,
        default_subnet: str = "172.17.0.0/16",
        default_bridge: str = "pymachine0",
        bridge_prefix: str = "pm-",
        veth_prefix: str = "pmv",
        nft_table: str = "pymachine",
        address_pools: Sequence[tuple[str, int]] = DEFAULT_POOLS,
        port_mode: str = "dnat",
        upstream_dns: Sequence[str] | None = None,
        guest_resolv_conf: Path = Path("/etc/resolv.conf"),
    ) -> None:
        """`port_mode` is "dnat" (nftables, the default: measured faster, see docs/networking.md) or "proxy"
        (a userland relay thread per port). `upstream_dns` ("ip" or "ip:port") is where the embedded DNS and
        the default bridge's resolv.conf point; None reads `guest_resolv_conf`."""
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, running: Mapping[str, int] | None = None) -> None:
        """Create the default `bridge`, `host` and `none` networks if missing, program nftables, and
        reconcile: endpoints of containers not in `running` (container id -> pid; None = judge by the recorded
        pid and its network namespace) are torn down; live ones get their DNS listeners and ports back."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop DNS and proxy threads (agent shutdown). Kernel state and records stay for the next `start`."""
        raise NotImplementedError

    # --- Docker network CRUD -----------------------------------------------------------------------------

    def create_network(
        self,
        name: str,
        driver: str = "bridge",
        subnet: str = "",
        gateway: str = "",
        internal: bool = False,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        check_duplicate: bool = True,
    ) -> dict[str, Any]:
        """`POST /networks/create` → `{"Id": ..., "Warning": ""}`. Only the bridge driver creates networks."""
        raise NotImplementedError

    def list_networks(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """`GET /networks` (filters: name, id, driver, label, type=custom|builtin)."""
        raise NotImplementedError

    def inspect_network(self, name_or_id: str) -> dict[str, Any]:
        """`GET /networks/{id}`: full name, full id, or unique id prefix."""
        raise NotImplementedError

    def remove_network(self, name_or_id: str) -> None:
        """`DELETE /networks/{id}`; builtin networks and networks with running endpoints: ConflictError."""
        raise NotImplementedError

    def prune_networks(self) -> dict[str, Any]:
        """`POST /networks/prune`: remove unused user networks."""
        raise NotImplementedError

    def connect(self, name_or_id: str, container_id: str, settings: EndpointSettings | None = None) -> None:
        """`POST /networks/{id}/connect`: remembered for the container's next start, and hot-plugged now if
        the container is attached (running)."""
        raise NotImplementedError

    def disconnect(self, name_or_id: str, container_id: str, force: bool = False) -> None:
        """`POST /networks/{id}/disconnect`: the inverse of connect."""
        raise NotImplementedError

    # --- runtime hooks -----------------------------------------------------------------------------------

    def netns_path_for(self, network_mode: str) -> str | None:
        """For `container:<id|name>`: the network namespace path the runtime joins; None for other modes."""
        raise NotImplementedError

    def attach(self, container_id: str, pid: int, config: EndpointConfig) -> EndpointInfo:
        """Wire the container whose init is `pid` (already in its own netns for bridge/none/user networks):
        veth pair, eth0.., addresses, default route, lo up, DNS listener on 127.0.0.11 (user networks),
        published ports (emitting port events). Returns what the runtime writes into the container."""
        raise NotImplementedError

    def detach(self, container_id: str) -> None:
        """Undo `attach` (stop): unpublish (emitting events), delete veths, free addresses, drop DNS names.
        Idempotent. Networks joined with `connect` stay remembered."""
        raise NotImplementedError

    def forget(self, container_id: str) -> None:
        """Container removal: detach and drop every record of the container."""
        raise NotImplementedError

    def endpoint(self, container_id: str) -> EndpointInfo | None:
        """The live endpoint of a container (None when not attached)."""
        raise NotImplementedError

    def published_ports(self) -> list[PublishedPort]:
        """Every live published port (the engine re-announces them after a host agent reconnects)."""
        raise NotImplementedError
