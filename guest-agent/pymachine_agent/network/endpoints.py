"""Endpoint records: what one container has in the kernel, and how to build and tear it down.

An endpoint record is written *before* the kernel is touched (with the veth names it is about to create), so a
crash at any point leaves a record that reconciliation can undo.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from . import conntrack, plumbing
from .model import Attachment, EndpointInfo, NotFoundError, PublishedPort
from .proxy import TcpProxy, UdpProxy
from .young import YoungPort

log = logging.getLogger(__name__)

BRIDGE_MODES = ("bridge",)  # plus user network names; everything not host/none/container:


def normalize_mode(mode: str) -> str:
    mode = (mode or "bridge").strip()
    return "bridge" if mode == "default" else mode


def veth_name(prefix: str, container_id: str, network_id: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{network_id}".encode()).hexdigest()
    return (prefix + digest)[:15]


def attachments_of(rec: dict[str, Any]) -> list[Attachment]:
    return [Attachment(**a) for a in rec.get("attachments", [])]


def ports_of(rec: dict[str, Any]) -> list[PublishedPort]:
    return [PublishedPort.from_json(p) for p in rec.get("ports", [])]


def info_of(rec: dict[str, Any]) -> EndpointInfo:
    return EndpointInfo(
        container_id=rec["container_id"],
        mode=rec["mode"],
        netns_path=rec["netns_path"],
        hostname=rec["hostname"],
        hosts=rec["hosts"],
        resolv_conf=rec["resolv_conf"],
        attachments=attachments_of(rec),
        ports=ports_of(rec),
    )


def new_record(container_id: str, name: str, pid: int, mode: str, netns_path: str, netns_ino: int) -> dict:
    return {
        "container_id": container_id,
        "name": name,
        "pid": pid,
        "netns_ino": netns_ino,
        "mode": mode,
        "netns_path": netns_path,
        "hostname": "",
        "hosts": "",
        "resolv_conf": "",
        "attachments": [],
        "planned_links": [],
        "ports": [],
        "embedded_dns": False,
    }


def add_attachment(rec: dict[str, Any], attachment: Attachment) -> None:
    rec["attachments"].append(asdict(attachment))


def find_live(live: Mapping[str, dict[str, Any]], ref: str) -> dict[str, Any]:
    """The live endpoint record of the container `ref` (id, name, or unique id prefix), for
    `container:<ref>` network modes."""
    if ref in live:
        return live[ref]
    found = [r for r in live.values() if r.get("name", "").lstrip("/") == ref.lstrip("/")]
    found = found or [r for cid, r in live.items() if ref and cid.startswith(ref)]
    if len(found) != 1:
        raise NotFoundError(f"cannot join network of container {ref}: it is not running")
    return found[0]


def unplug_from(rec: dict[str, Any], net_id: str) -> bool:
    """Delete the container's attachment to one network (kernel links and record); False if it had none."""
    kept, gone = [], []
    for a in rec["attachments"]:
        (gone if a["network_id"] == net_id else kept).append(a)
    if not gone:
        return False
    remove_links({"attachments": gone})
    rec["attachments"] = kept
    return True


def dns_names(rec: dict[str, Any], attachment: Attachment) -> set[str]:
    """Names a container answers to on one network: its name, short id, aliases, each also as
    `<name>.<network>` (Docker resolves both)."""
    base = {rec["container_id"][:12]}
    if rec.get("name"):
        base.add(rec["name"].lstrip("/"))
    base.update(attachment.aliases)
    base = {n.lower() for n in base if n}
    return base | {f"{n}.{attachment.network_name.lower()}" for n in base}


class PortHolder:
    """The sockets (DNAT mode) or proxies (proxy mode) that hold each container's published host ports, and
    the relays of young TCP ports (young.py). `on_grown`: a young port's server listens now, render the table
    again (called from the relay's thread, without any lock held)."""

    def __init__(self, on_grown: Callable[[], None] = lambda: None, young: bool = True) -> None:
        self.held: dict[str, list[Any]] = {}
        self.on_grown = on_grown
        self.young_ports = young  # off on an ssh-provisioned host (remote_install.settings says why)

    def add(
        self, container_id: str, sock: socket.socket, port: PublishedPort, proxy: bool, pid: int = 0
    ) -> None:
        """`pid`: the container's init, given when the port is published as the container starts (not when a
        restarted agent holds it again): its DNAT-mode TCP port starts young."""
        holder: Any = sock
        if proxy:
            target = (port.container_ip, port.container_port)
            holder = TcpProxy(sock, target) if port.proto == "tcp" else UdpProxy(sock, target)
        self.held.setdefault(container_id, []).append(holder)
        if pid and self.young_ports and not proxy and port.proto == "tcp":
            try:
                self.held[container_id].append(YoungPort(pid, port, self.on_grown))
            except OSError as exc:  # no relay: the port is DNAT'd at once, as before young ports
                log.warning("no relay for young port %s: %s", port.host_port, exc)

    def young(self) -> dict[int, int]:
        """TCP host port → relay port, for the young ports whose server may not listen yet."""
        return {
            h.port.host_port: h.relay_port
            for holders in self.held.values()
            for h in holders
            if isinstance(h, YoungPort) and not h.grown
        }

    def release(self, container_id: str) -> None:
        for holder in self.held.pop(container_id, []):
            try:
                holder.close()
            except OSError as exc:
                log.warning("closing port holder of %s: %s", container_id[:12], exc)

    def release_all(self) -> None:
        for cid in list(self.held):
            self.release(cid)


def remove_links(rec: dict[str, Any]) -> None:
    """Delete the host ends of the container's veths (the peer goes with it). Those already gone with the
    container's namespace are fine."""
    names = set(rec.get("planned_links", [])) | {a["host_ifname"] for a in rec.get("attachments", [])}
    for name in sorted(names):
        try:
            plumbing.delete_link(name)
        except OSError as exc:
            log.warning("deleting %s: %s", name, exc)


def forget_flows(rec: dict[str, Any]) -> None:
    """Drop conntrack entries of the container's addresses (after its DNAT rules are gone), so a client that
    keeps sending UDP to a published port is not stuck on the old container."""
    for a in rec.get("attachments", []):
        try:
            conntrack.forget_address(a["ip"])
        except OSError as exc:
            log.warning("forgetting conntrack entries of %s: %s", a["ip"], exc)
