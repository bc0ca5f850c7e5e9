"""NetworkManager: the one object the engine and the runtime talk to for container networking."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import hostsfile, nat, networks, plumbing
from .dns import DnsServer
from .endpoints import (
    PortHolder,
    attachments_of,
    dns_names,
    find_live,
    forget_flows,
    info_of,
    ports_of,
    remove_links,
    unplug_from,
)
from .model import (
    ConflictError,
    EndpointConfig,
    EndpointInfo,
    EndpointSettings,
    ForbiddenError,
    InvalidParameterError,
    NetworkError,
    PublishedPort,
)
from .netns import netns_id, write_sysctl
from .options import env_options
from .store import Records
from .wiring import Wiring

log = logging.getLogger(__name__)

PortEventCallback = Callable[[dict[str, Any]], None]

DEFAULT_POOLS: tuple[tuple[str, int], ...] = (
    ("172.18.0.0/15", 16),
    ("172.20.0.0/14", 16),
    ("192.168.0.0/16", 20),
)


class NetworkManager:
    """Owns every network record, endpoint, nftables rule, published port and DNS listener of one agent.

    Thread-safe: every public method takes one lock (port events are emitted outside it). State lives under
    `state_dir` (networks/, endpoints/, containers/: JSON written atomically), so a restarted agent can
    reconcile with the kernel in `start`.
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
        default_host_ip: str = "",
        young_ports: bool = True,
    ) -> None:
        """`young_ports`: a TCP port answers before the container's server listens (young.py).
        `port_mode` is "dnat" (nftables, the default: measured faster, see docs/networking.md) or "proxy"
        (a userland relay thread per port). `upstream_dns` ("ip" or "ip:port") is where the embedded DNS
        forwards names it does not own; None reads the nameservers of `guest_resolv_conf`.
        `default_host_ip` is the address a port published without a HostIp is really bound to, as the
        engine's clients should see it (see Engine)."""
        env = env_options()
        default_subnet = env.get("default_subnet", default_subnet)
        default_bridge = env.get("default_bridge", default_bridge)
        bridge_prefix = env.get("bridge_prefix", bridge_prefix)
        veth_prefix = env.get("veth_prefix", veth_prefix)
        nft_table = env.get("nft_table", nft_table)
        port_mode = env.get("port_mode", port_mode)
        if "address_pools" in env:
            address_pools = [(str(base), int(size)) for base, size in env["address_pools"]]
        if port_mode not in ("dnat", "proxy"):
            raise InvalidParameterError(f"port_mode must be dnat or proxy, not {port_mode!r}")
        self.state_dir = Path(state_dir)
        self.on_port_event = on_port_event
        self.bridge_prefix = bridge_prefix
        self.default_bridge = default_bridge
        self.veth_prefix = veth_prefix
        self.nft_table = nft_table
        self.pools = list(address_pools)
        self.port_mode = port_mode
        self.guest_resolv_conf = guest_resolv_conf
        self.lock = threading.RLock()
        self.table = networks.NetworkTable(
            Records(self.state_dir / "networks"), default_bridge, bridge_prefix, default_subnet
        )
        self.endpoints = Records(self.state_dir / "endpoints")
        self.containers = Records(self.state_dir / "containers")
        self.live: dict[str, dict[str, Any]] = {}
        self.holder = PortHolder(self._grown, young=young_ports)
        self.dns = DnsServer(self._resolve, self._upstreams(upstream_dns), self._container_upstreams)
        self.wiring = Wiring(
            table=self.table,
            endpoints=self.endpoints,
            containers=self.containers,
            live=self.live,
            holder=self.holder,
            dns=self.dns,
            apply_nat=self._apply_nat,
            guest_resolv=self.guest_resolv,
            veth_prefix=veth_prefix,
            port_mode=port_mode,
            default_host_ip=default_host_ip,
        )

    def _upstreams(self, configured: Sequence[str] | None) -> list[tuple[str, int]]:
        servers = list(configured) if configured is not None else self.guest_resolv().nameservers
        out = []
        for server in servers:
            host, _, port = server.partition(":")
            out.append((host, int(port or 53)))
        return out

    def _container_upstreams(self, container_id: str) -> list[tuple[str, int]] | None:
        """A container's `--dns` servers: on user networks the embedded DNS forwards to them (as Docker)."""
        with self.lock:
            rec = self.live.get(container_id)
            return self._upstreams(rec.get("dns_upstreams") or []) if rec else None

    def _resolve(self, container_id: str, qname: str) -> list[str] | None:
        """DNS: addresses of `qname` among containers on a user network of the asker; None = not ours."""
        with self.lock:
            asker = self.live.get(container_id)
            if asker is None:
                return None
            mine = {a.network_id for a in attachments_of(asker) if a.network_name != "bridge"}
            found = []
            for rec in self.live.values():
                for a in attachments_of(rec):
                    if a.network_id in mine and qname in dns_names(rec, a) and a.ip not in found:
                        found.append(a.ip)
            return found or None

    def guest_resolv(self) -> hostsfile.ResolvConf:
        try:
            return hostsfile.parse_resolv_conf(self.guest_resolv_conf.read_text())
        except OSError:
            return hostsfile.ResolvConf()

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, running: Mapping[str, int] | None = None) -> None:
        """Create the default `bridge`, `host` and `none` networks if missing, program nftables, and
        reconcile: endpoints of containers not in `running` (container id -> pid; None = judge by the recorded
        pid and its network namespace) are torn down; live ones get their DNS listeners and ports back."""
        with self.lock:
            write_sysctl("net/ipv4/ip_forward", "1")
            self.table.ensure_builtin()
            bridges = set()
            for rec in self.table.bridges():
                subnet, gateway = networks.subnet_of(rec)
                plumbing.ensure_bridge(rec["_bridge"], gateway, int(subnet.split("/")[1]))
                bridges.add(rec["_bridge"])
            for name in plumbing.links_with_prefix(self.bridge_prefix):
                if name not in bridges:
                    plumbing.delete_link(name)
            dead = []
            for cid, rec in self.endpoints.all().items():
                if self._alive(rec, running):
                    self._restore(cid, rec)
                else:
                    log.info("reconcile: removing endpoint of gone container %s", cid[:12])
                    remove_links(rec)
                    self.endpoints.delete(cid)
                    dead.append(rec)
            keep = {a.host_ifname for rec in self.live.values() for a in attachments_of(rec)}
            for name in plumbing.links_with_prefix(self.veth_prefix):
                if name not in keep:
                    plumbing.delete_link(name)
            self._apply_nat()
            for rec in dead:
                forget_flows(rec)

    def _alive(self, rec: dict[str, Any], running: Mapping[str, int] | None) -> bool:
        pid = rec.get("pid", 0)
        if running is not None and running.get(rec["container_id"]) != pid:
            return False
        if rec["mode"] == "host" or rec["mode"].startswith("container:"):
            return os.path.exists(f"/proc/{pid}")
        try:
            return netns_id(f"/proc/{pid}/ns/net") == rec.get("netns_ino")
        except OSError:
            return False

    def _restore(self, cid: str, rec: dict[str, Any]) -> None:
        self.live[cid] = rec
        for port in ports_of(rec):
            try:
                self.wiring.hold(cid, port)
            except NetworkError as exc:
                log.warning("reconcile: %s", exc.message)
        if rec.get("embedded_dns"):
            try:
                self.dns.add(cid, rec["netns_path"])
            except OSError as exc:
                log.warning("reconcile: DNS listener for %s: %s", cid[:12], exc)

    def close(self) -> None:
        """Stop DNS and proxy threads (agent shutdown). Kernel state and records stay for the next `start`."""
        with self.lock:
            self.dns.close()
            self.holder.release_all()

    def _apply_nat(self) -> None:
        nets = []
        for rec in self.table.bridges():
            subnet, _ = networks.subnet_of(rec)
            masq = rec["Options"].get("com.docker.network.bridge.enable_ip_masquerade", "true") != "false"
            nets.append(nat.BridgeNet(rec["_bridge"], subnet, bool(rec.get("Internal")), masq))
        dnats, proxied, redirects = [], [], []
        young = self.holder.young()  # to their relay until the server listens (young.py)
        for rec in self.live.values():
            for p in ports_of(rec):
                if self.port_mode != "dnat":
                    proxied.append((p.proto, p.host_port))
                elif p.proto == "tcp" and p.host_port in young:
                    redirects.append((p.host_port, young[p.host_port]))
                else:
                    dnats.append(nat.Dnat(p.proto, p.host_port, p.container_ip, p.container_port))
        nat.apply(self.nft_table, nets, dnats, proxied, redirects)

    def _grown(self) -> None:
        """A young port's server listens now: its DNAT rule takes over from the relay."""
        with self.lock:
            self._apply_nat()

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
        ipv6: bool = False,
        subnet6: str = "",
        gateway6: str = "",
    ) -> dict[str, Any]:
        """`POST /networks/create` → `{"Id": ..., "Warning": ""}`. Only the bridge driver creates networks."""
        with self.lock:
            bridge = (options or {}).get("com.docker.network.bridge.name")
            if bridge and driver in ("bridge", ""):
                networks.check_bridge_name(bridge, self.table.all(), plumbing.links_with_prefix(""))
            rec = self.table.create(
                name,
                driver,
                subnet,
                gateway,
                internal,
                labels or {},
                options or {},
                self.pools,
                plumbing.guest_routes(),
                ipv6,
                subnet6,
                gateway6,
            )
            try:
                sub, gw = networks.subnet_of(rec)
                plumbing.ensure_bridge(rec["_bridge"], gw, int(sub.split("/")[1]))
                self._apply_nat()
            except BaseException:
                self.table.delete(rec["Id"])
                plumbing.delete_link(rec["_bridge"])
                raise
            return {"Id": rec["Id"], "Warning": ""}

    def _containers_on(self, net_id: str) -> dict[str, Any]:
        out = {}
        for cid, rec in self.live.items():
            for a in attachments_of(rec):
                if a.network_id == net_id:
                    out[cid] = {
                        "Name": rec.get("name", ""),
                        "EndpointID": a.endpoint_id,
                        "MacAddress": a.mac,
                        "IPv4Address": f"{a.ip}/{a.prefixlen}",
                        "IPv6Address": "",
                    }
        return out

    def list_networks(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """`GET /networks` (filters: name, id, driver, label, type=custom|builtin)."""
        with self.lock:
            return [
                networks.docker_json(rec, self._containers_on(rec["Id"]))
                for rec in sorted(self.table.all(), key=lambda r: r["Created"])
                if networks.matches(rec, filters)
            ]

    def inspect_network(self, name_or_id: str) -> dict[str, Any]:
        """`GET /networks/{id}`: full name, full id, or unique id prefix."""
        with self.lock:
            rec = self.table.find(name_or_id)
            return networks.docker_json(rec, self._containers_on(rec["Id"]))

    def remove_network(self, name_or_id: str) -> None:
        """`DELETE /networks/{id}`; builtin: ForbiddenError; with running endpoints: ConflictError."""
        with self.lock:
            rec = self.table.find(name_or_id)
            if rec["Name"] in networks.BUILTIN:
                raise ForbiddenError(f"{rec['Name']} is a pre-defined network and cannot be removed")
            if self._containers_on(rec["Id"]):
                raise ConflictError(
                    f"error while removing network: network {rec['Name']} id {rec['Id']} has active endpoints"
                )
            self.table.delete(rec["Id"])
            plumbing.delete_link(rec["_bridge"])
            self._apply_nat()

    def prune_networks(self) -> dict[str, Any]:
        """`POST /networks/prune`: remove unused user networks."""
        deleted = []
        with self.lock:
            for rec in self.table.all():
                if rec["Name"] not in networks.BUILTIN and not self._containers_on(rec["Id"]):
                    self.remove_network(rec["Id"])
                    deleted.append(rec["Name"])
        return {"NetworksDeleted": deleted}

    # --- runtime hooks -----------------------------------------------------------------------------------

    def netns_path_for(self, network_mode: str) -> str | None:
        """For `container:<id|name>`: the network namespace path the runtime joins; None for other modes."""
        if not network_mode.startswith("container:"):
            return None
        with self.lock:
            return find_live(self.live, network_mode.split(":", 1)[1])["netns_path"]

    def attach(self, container_id: str, pid: int, config: EndpointConfig) -> EndpointInfo:
        """Wire the container whose init is `pid` (already in its own netns for bridge/none/user networks):
        veth pair, eth0.., addresses, default route, lo up, DNS listener on 127.0.0.11 (user networks),
        published ports (emitting port events). Returns what the runtime writes into the container."""
        self.detach(container_id)
        with self.lock:
            rec = self.wiring.attach(container_id, pid, config)
        announced: list[PublishedPort] = []
        try:
            for port in ports_of(rec):
                if self.on_port_event is not None:
                    self.on_port_event(port.event("add"))
                announced.append(port)
        except BaseException:
            self.detach(container_id, announced=announced)
            raise
        return info_of(rec)

    def detach(self, container_id: str, announced: Sequence[PublishedPort] | None = None) -> None:
        """Undo `attach` (stop): unpublish (emitting events), delete veths, free addresses, drop DNS names.
        Idempotent. Networks joined with `connect` stay remembered."""
        with self.lock:
            rec = self.live.pop(container_id, None) or self.endpoints.read(container_id)
            if rec is None:
                return
            self.dns.remove(container_id)
            self.holder.release(container_id)
            remove_links(rec)
            self.endpoints.delete(container_id)
            if rec.get("ports"):  # the table depends only on networks and published ports: spare an nft run
                self._apply_nat()
            forget_flows(rec)
        for port in ports_of(rec) if announced is None else announced:
            if self.on_port_event is not None:
                try:
                    self.on_port_event(port.event("remove"))
                except Exception as exc:  # the port is gone either way; a lost event is healed by resync
                    log.warning("port remove event for %s: %s", container_id[:12], exc)

    def forget(self, container_id: str) -> None:
        """Container removal: detach and drop every record of the container."""
        self.detach(container_id)
        with self.lock:
            self.containers.delete(container_id)

    def endpoint(self, container_id: str) -> EndpointInfo | None:
        """The live endpoint of a container (None when not attached)."""
        with self.lock:
            rec = self.live.get(container_id)
            return info_of(rec) if rec else None

    def published_ports(self) -> list[PublishedPort]:
        """Every live published port (the engine re-announces them after a host agent reconnects)."""
        with self.lock:
            return [p for rec in self.live.values() for p in ports_of(rec)]

    def connect(self, name_or_id: str, container_id: str, settings: EndpointSettings | None = None) -> None:
        """`POST /networks/{id}/connect`: remembered for the container's next start, and hot-plugged now if
        the container is attached (running)."""
        settings = settings or EndpointSettings()
        with self.lock:
            net = self.table.find(name_or_id)
            if net["Driver"] != "bridge":
                raise ForbiddenError(f"container cannot be connected to the {net['Name']} network")
            wanted = self.containers.read(container_id) or {"networks": {}}
            rec = self.live.get(container_id)
            attached = rec is not None and any(a.network_id == net["Id"] for a in attachments_of(rec))
            if net["Id"] in wanted["networks"] or attached:
                raise ConflictError(
                    f"endpoint with name {container_id[:12]} already exists in network {net['Name']}"
                )
            if (
                rec is not None
                and rec["mode"] in ("host", "none")
                or (rec and rec["mode"].startswith("container:"))
            ):
                raise ForbiddenError(
                    f"container sharing the {rec['mode']} network cannot join other networks"
                )
            if rec is not None:
                self.wiring.plug_into(rec, net, settings, default_route=False)
                self.endpoints.write(container_id, rec)
            wanted["networks"][net["Id"]] = {
                "ipv6_address": settings.ipv6_address,
                "aliases": settings.aliases,
                "ipv4_address": settings.ipv4_address,
            }
            self.containers.write(container_id, wanted)

    def disconnect(self, name_or_id: str, container_id: str, force: bool = False) -> None:
        """`POST /networks/{id}/disconnect`: the inverse of connect."""
        with self.lock:
            net = self.table.find(name_or_id)
            wanted = self.containers.read(container_id) or {"networks": {}}
            remembered = wanted["networks"].pop(net["Id"], None) is not None
            rec = self.live.get(container_id)
            plugged = rec is not None and unplug_from(rec, net["Id"])
            if not (remembered or plugged) and not force:
                raise InvalidParameterError(
                    f"container {container_id[:12]} is not connected to network {net['Name']}"
                )
            self.containers.write(container_id, wanted)
            if rec is not None:
                self.endpoints.write(container_id, rec)
