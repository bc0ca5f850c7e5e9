"""The kernel half of NetworkManager.attach/connect: plugging a container into its networks.

Every method here runs under the manager's lock (the caller holds it); what it reads and changes is passed in.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import hostsfile, ipam, networks, plumbing, ports
from .dns import DnsServer
from .endpoints import (
    PortHolder,
    add_attachment,
    attachments_of,
    find_live,
    new_record,
    normalize_mode,
    ports_of,
    remove_links,
    veth_name,
)
from .model import Attachment, EndpointConfig, EndpointSettings, NetworkError, PortSpec, PublishedPort
from .netns import netns_id, netns_of
from .store import Records


class Wiring:
    def __init__(
        self,
        *,
        table: networks.NetworkTable,
        endpoints: Records,
        containers: Records,
        live: dict[str, dict[str, Any]],
        holder: PortHolder,
        dns: DnsServer,
        apply_nat: Callable[[], None],
        guest_resolv: Callable[[], hostsfile.ResolvConf],
        veth_prefix: str,
        port_mode: str,
        default_host_ip: str,
    ) -> None:
        """`endpoints`/`containers`: the manager's records of live endpoints and of `connect`ed networks;
        `live`: its container id -> endpoint record map (shared, changed in place); `apply_nat` reprograms
        nftables from the manager's state."""
        self.table = table
        self.endpoints = endpoints
        self.containers = containers
        self.live = live
        self.holder = holder
        self.dns = dns
        self.apply_nat = apply_nat
        self.guest_resolv = guest_resolv
        self.veth_prefix = veth_prefix
        self.port_mode = port_mode
        self.default_host_ip = default_host_ip

    def hold(self, cid: str, port: PublishedPort) -> None:
        """Hold a published port again (reconcile after an agent restart)."""
        proxy = self.port_mode == "proxy"
        self.holder.add(cid, ports.hold_port(port.proto, port.host_port, listen=proxy), port, proxy)

    def _used_ips(self, net_id: str, gateway: str) -> set[str]:
        used = {gateway}
        for rec in self.live.values():
            used |= {a.ip for a in attachments_of(rec) if a.network_id == net_id}
        return used

    def plug_into(
        self,
        rec: dict[str, Any],
        net: dict[str, Any],
        settings: EndpointSettings,
        default_route: bool,
    ) -> Attachment:
        subnet, gateway = networks.subnet_of(net)
        net_obj = ipaddress.IPv4Network(subnet)
        ip = ipam.allocate(net_obj, self._used_ips(net["Id"], gateway), settings.ipv4_address)
        ip6, prefixlen6 = "", 0
        if net.get("EnableIPv6") and len(net["IPAM"]["Config"]) > 1:
            net6 = ipaddress.IPv6Network(net["IPAM"]["Config"][1]["Subnet"])
            used6 = {
                a.ipv6 for r in self.live.values() for a in attachments_of(r) if a.network_id == net["Id"]
            }
            ip6, prefixlen6 = ipam.allocate6(net6, used6 - {""}, settings.ipv6_address), net6.prefixlen
        requested = {
            k: v
            for k, v in (("IPv4Address", settings.ipv4_address), ("IPv6Address", settings.ipv6_address))
            if v
        }
        taken = {a.ifname for a in attachments_of(rec)}
        ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in taken)
        host_if = veth_name(self.veth_prefix, rec["container_id"], net["Id"])
        mac = rec.get("_mac") if default_route and rec.get("_mac") else ipam.mac_for(ip)
        attachment = Attachment(
            network_id=net["Id"],
            network_name=net["Name"],
            endpoint_id=os.urandom(32).hex(),
            ifname=ifname,
            host_ifname=host_if,
            mac=mac,
            ip=ip,
            prefixlen=net_obj.prefixlen,
            gateway=gateway,
            aliases=list(settings.aliases),
            ipv6=ip6,
            prefixlen6=prefixlen6,
            requested=requested,
        )
        rec["planned_links"].append(host_if)
        self.endpoints.write(rec["container_id"], rec)  # before the kernel: a crash leaves an undoable record
        plumbing.plug(
            net["_bridge"],
            host_if,
            rec["pid"],
            ifname,
            ip,
            net_obj.prefixlen,
            gateway,
            mac,
            default_route,
            (ip6, prefixlen6) if ip6 else None,
        )
        add_attachment(rec, attachment)
        rec["planned_links"].remove(host_if)
        if net["Name"] != "bridge" and not rec["embedded_dns"]:
            self.dns.add(rec["container_id"], rec["netns_path"])
            rec["embedded_dns"] = True
        return attachment

    def _wanted_networks(
        self, container_id: str, mode: str, config: EndpointConfig
    ) -> list[tuple[dict[str, Any], EndpointSettings]]:
        """The networks to join, primary first: the mode's network, then EndpointsConfig, then `connect`s."""
        primary = self.table.find(mode)
        wanted: dict[str, tuple[dict[str, Any], EndpointSettings]] = {
            primary["Id"]: (primary, EndpointSettings())
        }
        for ref, settings in config.networks.items():
            net = self.table.find(ref)
            wanted[net["Id"]] = (net, settings)
        remembered = (self.containers.read(container_id) or {}).get("networks", {})
        for net_id, settings in remembered.items():
            if net_id in wanted:  # connected again to a network it is configured for: the aliases add up
                net, have = wanted[net_id]
                aliases = list(dict.fromkeys([*have.aliases, *settings.get("aliases", [])]))
                wanted[net_id] = (
                    net,
                    EndpointSettings(
                        aliases,
                        have.ipv4_address or settings.get("ipv4_address", ""),
                        have.ipv6_address or settings.get("ipv6_address", ""),
                    ),
                )
            else:
                try:
                    net = self.table.find(net_id)
                except NetworkError:
                    continue  # the network was removed since
                wanted[net_id] = (
                    net,
                    EndpointSettings(
                        settings.get("aliases", []),
                        settings.get("ipv4_address", ""),
                        settings.get("ipv6_address", ""),
                    ),
                )
        for net, _ in wanted.values():
            if net["Driver"] != "bridge":
                raise NetworkError(
                    f"container cannot be attached to network {net['Name']} together with others"
                )
        return list(wanted.values())

    def attach(self, container_id: str, pid: int, config: EndpointConfig) -> dict[str, Any]:
        mode = normalize_mode(config.network_mode)
        if mode not in ("host", "none") and not mode.startswith("container:"):
            driver = self.table.find(mode)["Driver"]
            mode = {"host": "host", "null": "none"}.get(driver, mode)
        hostname = config.hostname or container_id[:12]
        guest = self.guest_resolv()
        if mode.startswith("container:"):
            target = find_live(self.live, mode.split(":", 1)[1])
            rec = new_record(
                container_id,
                config.name,
                pid,
                f"container:{target['container_id']}",
                target["netns_path"],
                target["netns_ino"],
            )
            rec.update(hostname=target["hostname"], hosts=target["hosts"], resolv_conf=target["resolv_conf"])
            return self._commit(rec)
        if mode == "host":
            path = f"/proc/{os.getpid()}/ns/net"
            rec = new_record(container_id, config.name, pid, "host", path, netns_id(path))
            try:
                hosts = Path("/etc/hosts").read_text()
            except OSError:
                hosts = hostsfile.HOSTS_HEADER
            resolv = hostsfile.container_resolv_conf(
                guest, False, config.dns, config.dns_search, config.dns_options
            )
            rec.update(hostname=hostname, hosts=hosts + _extra(config, ""), resolv_conf=resolv)
            return self._commit(rec)
        path = netns_of(pid)
        rec = new_record(container_id, config.name, pid, mode, path, netns_id(path))
        rec["hostname"] = hostname
        rec["dns_upstreams"] = list(config.dns)
        if mode == "none":
            plumbing.loopback_up(pid)
            rec["hosts"] = hostsfile.container_hosts(hostname, config.domainname, [], config.extra_hosts, "")
            rec["resolv_conf"] = hostsfile.container_resolv_conf(
                guest, False, config.dns, config.dns_search, config.dns_options
            )
            return self._commit(rec)
        wanted = self._wanted_networks(container_id, mode, config)
        specs = ports.effective_specs(config.ports, config.exposed, config.publish_all)
        ports.check_specs(specs, {(p.proto, p.host_port): p.container_id for p in self._all_ports()})
        rec["_mac"] = config.mac_address
        proxy = self.port_mode == "proxy"
        held: list[tuple[PortSpec, socket.socket]] = []
        try:
            for spec in specs:  # before any veth: a clash fails fast with nothing to undo
                held.append((spec, ports.hold_port(spec.proto, spec.host_port, listen=proxy)))
            first = None
            for i, (net, settings) in enumerate(wanted):
                attachment = self.plug_into(rec, net, settings, default_route=i == 0)
                first = first or attachment
            assert first is not None
            while held:
                spec, sock = held.pop(0)
                host_port = sock.getsockname()[1]
                # the record holds the address really bound: it is what the host agent is told and what
                # inspect and ps show (a port asked for without HostIp takes the engine's default)
                host_ip = spec.host_ip or self.default_host_ip
                port = PublishedPort(
                    container_id, spec.proto, host_ip, host_port, first.ip, spec.container_port
                )
                self.holder.add(container_id, sock, port, proxy, pid=pid)
                rec["ports"].append(port.to_json())
            rec["hosts"] = hostsfile.container_hosts(
                hostname, config.domainname, [first.ip], config.extra_hosts, first.gateway
            )
            rec["resolv_conf"] = hostsfile.container_resolv_conf(
                guest, rec["embedded_dns"], config.dns, config.dns_search, config.dns_options
            )
            rec.pop("_mac", None)
            return self._commit(rec, nat=bool(rec["ports"]))  # proxy mode: the guard opens the ports
        except BaseException:
            for _, sock in held:
                sock.close()
            self.dns.remove(container_id)
            self.holder.release(container_id)
            remove_links(rec)
            self.endpoints.delete(container_id)
            self.live.pop(container_id, None)
            if rec["ports"]:
                self.apply_nat()
            raise

    def _commit(self, rec: dict[str, Any], nat: bool = False) -> dict[str, Any]:
        self.live[rec["container_id"]] = rec
        if nat:
            self.apply_nat()
        self.endpoints.write(rec["container_id"], rec)
        return rec

    def _all_ports(self) -> list[PublishedPort]:
        return [p for rec in self.live.values() for p in ports_of(rec)]


def _extra(config: EndpointConfig, gateway: str) -> str:
    return "".join(
        f"{ip}\t{name}\n" for name, ip in (hostsfile.parse_extra_host(e, gateway) for e in config.extra_hosts)
    )
