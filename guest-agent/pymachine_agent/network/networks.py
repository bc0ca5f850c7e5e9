"""Network records in Docker's JSON shapes: the builtin `bridge`, `host`, `none` and user bridge networks."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import ipam
from .model import ConflictError, InvalidParameterError, NotFoundError
from .store import Records

BUILTIN = ("bridge", "host", "none")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def _now() -> str:
    """RFC 3339 with nanoseconds, as Docker prints it (and so listing in creation order is stable)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def new_id() -> str:
    return os.urandom(32).hex()


class NetworkTable:
    """The network records. Private keys start with "_" and never reach a client (`_bridge`: the bridge)."""

    def __init__(
        self, records: Records, default_bridge: str, bridge_prefix: str, default_subnet: str
    ) -> None:
        self.records = records
        self.default_bridge = default_bridge
        self.bridge_prefix = bridge_prefix
        self.default_subnet = default_subnet

    def ensure_builtin(self) -> None:
        names = {rec["Name"] for rec in self.records.all().values()}
        if "bridge" not in names:
            net = ipam.parse_subnet(self.default_subnet)
            options = {
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                "com.docker.network.bridge.name": self.default_bridge,
                "com.docker.network.driver.mtu": "1500",
            }
            self._save(
                self._record("bridge", "bridge", str(net), ipam.default_gateway(net), False, {}, options)
            )
        if "host" not in names:
            self._save(self._record("host", "host", "", "", False, {}, {}))
        if "none" not in names:
            self._save(self._record("none", "null", "", "", False, {}, {}))

    def _record(
        self,
        name: str,
        driver: str,
        subnet: str,
        gateway: str,
        internal: bool,
        labels: Mapping[str, str],
        options: Mapping[str, str],
    ) -> dict[str, Any]:
        net_id = new_id()
        config = [{"Subnet": subnet, "Gateway": gateway}] if subnet else []
        bridge = ""
        if driver == "bridge":
            bridge = options.get("com.docker.network.bridge.name") or (self.bridge_prefix + net_id)[:15]
        return {
            "Name": name,
            "Id": net_id,
            "Created": _now(),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv4": True,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Internal": internal,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Options": dict(options),
            "Labels": dict(labels),
            "_bridge": bridge,
        }

    def _save(self, rec: dict[str, Any]) -> None:
        self.records.write(rec["Id"], rec)

    def all(self) -> list[dict[str, Any]]:
        return list(self.records.all().values())

    def bridges(self) -> list[dict[str, Any]]:
        return [rec for rec in self.all() if rec["Driver"] == "bridge"]

    def find(self, name_or_id: str) -> dict[str, Any]:
        recs = self.all()
        for rec in recs:
            if rec["Id"] == name_or_id:
                return rec
        for rec in recs:
            if rec["Name"] == name_or_id:
                return rec
        matches = [rec for rec in recs if name_or_id and rec["Id"].startswith(name_or_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameterError(f"network {name_or_id} is ambiguous ({len(matches)} matches found)")
        raise NotFoundError(f"network {name_or_id} not found")

    def create(
        self,
        name: str,
        driver: str,
        subnet: str,
        gateway: str,
        internal: bool,
        labels: Mapping[str, str],
        options: Mapping[str, str],
        pools: Sequence[tuple[str, int]],
        guest_routes: Iterable[str],
        ipv6: bool = False,
        subnet6: str = "",
        gateway6: str = "",
    ) -> dict[str, Any]:
        if not NAME_RE.match(name or ""):
            raise InvalidParameterError(f"invalid network name {name!r}")
        if driver not in ("bridge", ""):
            raise InvalidParameterError(f"network driver {driver!r} is not supported (only bridge)")
        if any(rec["Name"] == name for rec in self.all()):
            raise ConflictError(f"network with name {name} already exists")
        used = [c["Subnet"] for c in self._configs() if ":" not in c["Subnet"]]
        if subnet:
            net = ipam.parse_subnet(subnet)
            clash = ipam.overlapping(str(net), used)
            if clash:
                raise self._overlap(clash)
        else:
            net = ipam.parse_subnet(ipam.pick_subnet(pools, [*used, *guest_routes]))
        gw = ipam.check_gateway(net, gateway) if gateway else ipam.default_gateway(net)
        rec = self._record(name, "bridge", str(net), gw, internal, labels, options)
        if ipv6 or subnet6:
            rec["IPAM"]["Config"].append(self._ipv6_config(rec["Id"], subnet6, gateway6))
            rec["EnableIPv6"] = ipv6
        self._save(rec)
        return rec

    def _configs(self) -> list[dict[str, Any]]:
        """Every IPAM.Config entry with a subnet, of every network."""
        return [c for r in self.all() for c in r["IPAM"]["Config"] if c.get("Subnet")]

    def _overlap(self, clash: str) -> ConflictError:
        owner = next(
            (r["Name"] for r in self.all() for c in r["IPAM"]["Config"] if c.get("Subnet") == clash), ""
        )
        return ConflictError(
            f"invalid pool request: Pool overlaps with other one on this address space ({clash}"
            + (f" of network {owner})" if owner else ")")
        )

    def _ipv6_config(self, net_id: str, subnet6: str, gateway6: str) -> dict[str, str]:
        """The IPv6 entry of IPAM.Config: the subnet asked for (or a unique local /64), checked against the
        other networks' IPv6 subnets; the gateway is recorded as Docker does (::1 unless given)."""
        net6 = ipam.parse_subnet6(subnet6) if subnet6 else ipam.parse_subnet6(ipam.ula_subnet(net_id))
        clash = ipam.overlapping6(str(net6), [c["Subnet"] for c in self._configs() if ":" in c["Subnet"]])
        if clash:
            raise self._overlap(clash)
        if gateway6:
            try:
                gw6 = ipaddress.IPv6Address(gateway6)
            except ValueError:
                raise InvalidParameterError(f"invalid gateway {gateway6!r}") from None
            if gw6 not in net6:
                raise InvalidParameterError(f"gateway {gateway6} is not in subnet {net6}")
        else:
            gw6 = net6.network_address + 1
        return {"Subnet": str(net6), "Gateway": str(gw6)}

    def delete(self, net_id: str) -> None:
        self.records.delete(net_id)


IFNAME_MAX = 15  # IFNAMSIZ - 1


def check_bridge_name(name: str, records: Iterable[Mapping[str, Any]], links: Iterable[str]) -> None:
    """`com.docker.network.bridge.name` must name a new interface: an existing one (the uplink `eth0`, `lo`, a
    container's veth, a bridge of another network) would be given this network's gateway address, and deleted
    with the network. Docker adopts an existing bridge; we refuse every existing interface."""
    if not name or len(name) > IFNAME_MAX or name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise InvalidParameterError(
            f"invalid com.docker.network.bridge.name {name!r}: an interface name of 1 to {IFNAME_MAX} "
            "characters without '/', ':' or spaces"
        )
    for rec in records:
        if rec.get("_bridge") == name:
            raise ConflictError(f"bridge name {name} is already used by network {rec['Name']}")
    if name in set(links):
        raise ConflictError(
            f"interface {name} already exists in the VM and was not created for a network: choose another "
            "com.docker.network.bridge.name (pymachine never adopts or changes an existing interface)"
        )


def subnet_of(rec: Mapping[str, Any]) -> tuple[str, str]:
    """(subnet, gateway) of a bridge network record."""
    config = rec["IPAM"]["Config"][0]
    return config["Subnet"], config["Gateway"]


def docker_json(rec: Mapping[str, Any], containers: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if not k.startswith("_")}
    out["Containers"] = dict(containers)
    return out


def matches(rec: Mapping[str, Any], filters: Mapping[str, Sequence[str]] | None) -> bool:
    """Docker's /networks filters: name (substring), id (prefix), driver, label (key or key=value), type."""
    for key, wanted in (filters or {}).items():
        values = list(wanted.keys()) if isinstance(wanted, dict) else list(wanted)
        if not values:
            continue
        if key == "name" and not any(v in rec["Name"] for v in values):
            return False
        if key == "id" and not any(rec["Id"].startswith(v) for v in values):
            return False
        if key == "driver" and rec["Driver"] not in values:
            return False
        if key == "type":
            kind = "builtin" if rec["Name"] in BUILTIN else "custom"
            if kind not in values:
                return False
        if key == "label":
            for v in values:
                k, _, val = v.partition("=")
                if k not in rec["Labels"] or ("=" in v and rec["Labels"][k] != val):
                    return False
    return True
