"""Published ports: parsing `-p` specs and Docker's PortBindings (pure), and holding host ports (I/O).

A published host port is *held* by a socket bound on 0.0.0.0 in the guest: it makes clashes with processes in
the guest fail loudly (EADDRINUSE names the port), hands out ephemeral ports from the kernel's range, and in
proxy mode is the listening socket itself. The host IP of a spec only tells the host agent where to listen on
the host; inside the guest the port is reachable on 127.0.0.1 and every other guest address.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .model import InvalidParameterError, PortClashError, PortSpec

PROTOS = ("tcp", "udp")


def _port(text: str, what: str, allow_zero: bool = False) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameterError(f"invalid {what} {text!r}") from None
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise InvalidParameterError(f"invalid {what} {text!r}: must be 1-65535")
    return value


def _range(text: str, what: str) -> list[int]:
    if "-" in text:
        lo_text, hi_text = text.split("-", 1)
        lo, hi = _port(lo_text, what), _port(hi_text, what)
        if hi < lo:
            raise InvalidParameterError(f"invalid {what} range {text!r}")
        return list(range(lo, hi + 1))
    return [_port(text, what)]


def parse_host_ip(text: str) -> str:
    """A binding's HostIp: an IPv4 literal or "" (not asked). Never a name: `0`, `localhost` or any hostname
    would be resolved by whoever binds it (`0` means 0.0.0.0 to the C library), so they are refused."""
    text = text.strip("[]")
    if not text:
        return ""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidParameterError(
            f"invalid host IP {text[:80]!r}: use an IP address such as 127.0.0.1 or 0.0.0.0, or none"
        ) from None
    if addr.version != 4:
        raise InvalidParameterError(f"host IP {text}: only IPv4 publishing is supported (the VM has no IPv6)")
    return str(addr)


def parse_publish(spec: str) -> list[PortSpec]:
    """One `-p` value: `[ip:][hostPort:]containerPort[/tcp|/udp]`, ports may be equal-length ranges.

    "80" → ephemeral host port; "8080:80"; "127.0.0.1:8080:80/udp"; "127.0.0.1::80"; "8000-8001:80-81"."""
    proto = "tcp"
    body = spec.strip()
    if "/" in body:
        body, proto = body.rsplit("/", 1)
        proto = proto.lower()
    if proto not in PROTOS:
        raise InvalidParameterError(f"invalid protocol {proto!r} in port spec {spec!r}: use tcp or udp")
    if body.startswith("["):  # [::1]:8080:80
        end = body.find("]")
        ip_text, rest = body[: end + 1], body[end + 2 :]
        parts = [ip_text, *rest.split(":")]
    else:
        parts = body.split(":")
    if len(parts) == 1:
        host_ip, host_text, container_text = "", "", parts[0]
    elif len(parts) == 2:
        host_ip, host_text, container_text = "", parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host_text, container_text = parts
    else:
        raise InvalidParameterError(f"invalid port spec {spec!r}: use [ip:][hostPort:]containerPort[/proto]")
    ip = parse_host_ip(host_ip)
    containers = _range(container_text, "container port")
    if not host_text:
        return [PortSpec(c, proto, 0, ip) for c in containers]
    hosts = _range(host_text, "host port")
    if len(hosts) != len(containers):
        raise InvalidParameterError(f"port spec {spec!r}: host and container ranges differ in length")
    return [PortSpec(c, proto, h, ip) for h, c in zip(hosts, containers, strict=True)]


def _key(key: str) -> tuple[int, str]:
    port_text, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOS:
        raise InvalidParameterError(f"invalid protocol in port {key!r}")
    return _port(port_text, "container port"), proto


def from_port_bindings(
    bindings: Mapping[str, Sequence[Mapping[str, Any]] | None] | None,
    exposed: Iterable[str] = (),
    publish_all: bool = False,
) -> list[PortSpec]:
    """Docker API `HostConfig.PortBindings` (+ `-P`: every `ExposedPorts` key not bound gets an ephemeral
    host port) → PortSpecs. `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`; "" host port = ephemeral."""
    specs: list[PortSpec] = []
    bound: set[str] = set()
    for key, hosts in (bindings or {}).items():
        container_port, proto = _key(key)
        bound.add(f"{container_port}/{proto}")
        for host in hosts or [{}]:
            host_port_text = str(host.get("HostPort") or "")
            ip = parse_host_ip(str(host.get("HostIp") or ""))
            if "-" in host_port_text:  # a range for one container port: the first free is picked later
                host_port_text = host_port_text.split("-", 1)[0]
            host_port = _port(host_port_text, "host port") if host_port_text else 0
            specs.append(PortSpec(container_port, proto, host_port, ip))
    if publish_all:
        for key in exposed:
            container_port, proto = _key(key)
            if f"{container_port}/{proto}" not in bound:
                specs.append(PortSpec(container_port, proto, 0, ""))
    return specs


def effective_specs(specs: Sequence[PortSpec], exposed: Iterable[str], publish_all: bool) -> list[PortSpec]:
    """`specs` plus, for `-P`, an ephemeral host port for every exposed port that has no binding."""
    out = list(specs)
    if publish_all:
        bound = {s.key for s in specs}
        for key in exposed:
            container_port, proto = _key(key)
            spec = PortSpec(container_port, proto, 0, "")
            if spec.key not in bound:
                bound.add(spec.key)
                out.append(spec)
    return out


def check_specs(specs: Sequence[PortSpec], published: Mapping[tuple[str, int], str]) -> None:
    """Clashes known without touching the kernel: the same host port twice in one request, or a host port
    already published by a container (`published`: (proto, host_port) → container id)."""
    seen: set[tuple[str, int]] = set()
    for spec in specs:
        if not spec.host_port:
            continue
        key = (spec.proto, spec.host_port)
        if key in seen:
            raise PortClashError(
                f"host port {spec.host_port}/{spec.proto} is published twice in this request",
                spec.proto,
                spec.host_port,
            )
        seen.add(key)
        owner = published.get(key)
        if owner:
            raise PortClashError(
                f"Bind for 0.0.0.0:{spec.host_port} failed: port {spec.host_port}/{spec.proto} is already "
                f"allocated (published by container {owner[:12]})",
                spec.proto,
                spec.host_port,
            )


def hold_port(proto: str, host_port: int, listen: bool = False) -> socket.socket:
    """Bind 0.0.0.0:host_port (0 = let the kernel pick an ephemeral port) and return the socket.

    SO_REUSEADDR only for a TCP listener (proxy mode, so a restart is not blocked by TIME_WAIT): a bound,
    non-listening socket with it would let a second binder in."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    if listen and proto == "tcp":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", host_port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortClashError(
                f"host port {host_port}/{proto} is already in use in the guest (a process is bound to it)",
                proto,
                host_port,
            ) from None
        raise
    if listen and proto == "tcp":
        sock.listen(128)
    return sock
