"""Value types and errors of the network package: what callers pass in and get back.

Everything here is plain data (no I/O) so the runtime and the API glue can build and inspect it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# the errors live in pymachine_agent/errors.py (one family, HTTP status by type), named here as the
# network's callers know them
from pymachine_agent.errors import InvalidNetworkParameter as InvalidParameterError
from pymachine_agent.errors import NetworkConflict as ConflictError
from pymachine_agent.errors import NetworkError, PortClashError
from pymachine_agent.errors import NetworkForbidden as ForbiddenError
from pymachine_agent.errors import NetworkNotFound as NotFoundError

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidParameterError",
    "NetworkError",
    "NotFoundError",
    "PortClashError",
]


@dataclass(frozen=True)
class PortSpec:
    """One port publication request: container_port/proto on host_ip:host_port (host_port 0 = ephemeral)."""

    container_port: int
    proto: str = "tcp"
    host_port: int = 0
    host_ip: str = ""

    @property
    def key(self) -> str:
        """Docker's `NetworkSettings.Ports` key: "80/tcp"."""
        return f"{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class PublishedPort:
    """A live port: traffic to any guest address (and 127.0.0.1) at host_port reaches the container."""

    container_id: str
    proto: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int

    def event(self, action: str) -> dict[str, Any]:
        """The port event of docs/contracts.md §4 (the engine adds/keeps the `id`)."""
        return {
            "type": "port",
            "action": action,
            "container": self.container_id,
            "proto": self.proto,
            "host_ip": self.host_ip or "127.0.0.1",
            "host_port": self.host_port,
            "guest_port": self.host_port,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "proto": self.proto,
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_ip": self.container_ip,
            "container_port": self.container_port,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishedPort:
        return cls(**data)


@dataclass
class EndpointSettings:
    """Per-network wishes of a container (Docker's `NetworkingConfig.EndpointsConfig[name]`)."""

    aliases: list[str] = field(default_factory=list)
    ipv4_address: str = ""
    ipv6_address: str = ""  # --ip6; used when the network has IPv6 enabled


@dataclass
class EndpointConfig:
    """What the runtime knows about a container's networking when it calls `NetworkManager.attach`.

    `network_mode` is Docker's HostConfig.NetworkMode: "bridge" (or "default"/""), "host", "none",
    "container:<id>", or the name/id of a user network. `networks` holds further networks to connect at start
    (NetworkingConfig.EndpointsConfig), keyed by name or id; the network of `network_mode` may appear there
    too, carrying its aliases.
    """

    name: str = ""
    hostname: str = ""
    domainname: str = ""
    network_mode: str = "bridge"
    networks: dict[str, EndpointSettings] = field(default_factory=dict)
    ports: list[PortSpec] = field(default_factory=list)
    publish_all: bool = False
    exposed: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    mac_address: str = ""


@dataclass
class Attachment:
    """One interface of a container on one network."""

    network_id: str
    network_name: str
    endpoint_id: str
    ifname: str
    host_ifname: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str
    aliases: list[str] = field(default_factory=list)
    ipv6: str = ""  # on a network with IPv6 enabled (L2 only: see ipam.py)
    prefixlen6: int = 0
    requested: dict[str, str] = field(default_factory=dict)  # IPAMConfig as asked: IPv4Address, IPv6Address

    def docker_json(self) -> dict[str, Any]:
        """Docker's `NetworkSettings.Networks[name]` entry."""
        return {
            "IPAMConfig": dict(self.requested) or None,
            "Links": None,
            "Aliases": list(self.aliases) or None,
            "MacAddress": self.mac,
            "DriverOpts": None,
            "NetworkID": self.network_id,
            "EndpointID": self.endpoint_id,
            "Gateway": self.gateway,
            "IPAddress": self.ip,
            "IPPrefixLen": self.prefixlen,
            "IPv6Gateway": "",
            "GlobalIPv6Address": self.ipv6,
            "GlobalIPv6PrefixLen": self.prefixlen6,
            "DNSNames": list(self.aliases) or None,
        }


@dataclass
class EndpointInfo:
    """What `attach` set up. The runtime writes `hosts`, `resolv_conf` and `hostname_file` into the container
    (bind-mounted or copied to /etc/hosts, /etc/resolv.conf, /etc/hostname)."""

    container_id: str
    mode: str
    netns_path: str
    hostname: str
    hosts: str
    resolv_conf: str
    attachments: list[Attachment] = field(default_factory=list)
    ports: list[PublishedPort] = field(default_factory=list)

    @property
    def hostname_file(self) -> str:
        return self.hostname + "\n"

    def etc_files(self) -> dict[str, str]:
        """Container path → content: /etc/hostname, /etc/hosts, /etc/resolv.conf."""
        return {
            "/etc/hostname": self.hostname_file,
            "/etc/hosts": self.hosts,
            "/etc/resolv.conf": self.resolv_conf,
        }

    def write_etc_files(self, paths: Mapping[str, str]) -> None:
        """Write the files into the guest files the runtime bind-mounts (`ContainerSpec.etc_files`: container
        path → guest path). In place (truncate, same inode): an existing bind mount keeps seeing the file."""
        for target, content in self.etc_files().items():
            if target in paths:
                with open(paths[target], "w") as fh:
                    fh.write(content)

    def network_settings(self) -> dict[str, Any]:
        """Docker's `NetworkSettings` object of `GET /containers/{id}/json`."""
        ports: dict[str, Any] = {}
        for p in self.ports:
            ports.setdefault(f"{p.container_port}/{p.proto}", []).append(
                {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}
            )
        first = next((a for a in self.attachments if a.network_name == "bridge"), None)
        return {
            "Bridge": "",
            "SandboxID": self.container_id,
            "SandboxKey": self.netns_path,
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": first.endpoint_id if first else "",
            "Gateway": first.gateway if first else "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": first.ip if first else "",
            "IPPrefixLen": first.prefixlen if first else 0,
            "IPv6Gateway": "",
            "MacAddress": first.mac if first else "",
            "Networks": {a.network_name: a.docker_json() for a in self.attachments},
        }
