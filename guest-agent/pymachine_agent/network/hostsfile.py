"""Content of a container's /etc/hosts and /etc/resolv.conf (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .model import InvalidParameterError

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse_resolv_conf(text: str) -> ResolvConf:
    conf = ResolvConf()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            conf.nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            conf.search = words[1:]
        elif words[0] == "options":
            conf.options += words[1:]
    return conf


def render_resolv_conf(conf: ResolvConf) -> str:
    lines = [f"nameserver {ns}" for ns in conf.nameservers]
    if conf.search:
        lines.append("search " + " ".join(conf.search))
    if conf.options:
        lines.append("options " + " ".join(conf.options))
    return "\n".join(lines) + "\n"


def container_resolv_conf(
    guest: ResolvConf,
    embedded: bool,
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
) -> str:
    """Docker's rules: on user networks the only nameserver is the embedded 127.0.0.11 (ndots:0); elsewhere
    the --dns servers or the guest's, without loopback ones (they mean nothing inside the container)."""
    search = list(dns_search) or list(guest.search)
    if embedded:
        return render_resolv_conf(ResolvConf(["127.0.0.11"], search, ["ndots:0", *dns_options]))
    servers = list(dns) or [ns for ns in guest.nameservers if not ns.startswith("127.")]
    options = list(dns_options) or list(guest.options)
    return render_resolv_conf(ResolvConf(servers, search, options))


def parse_extra_host(entry: str, host_gateway: str) -> tuple[str, str]:
    """`--add-host name:ip` (Docker also accepts `name=ip`); "host-gateway" is the network's gateway."""
    sep = "=" if "=" in entry else ":"
    name, _, ip = entry.partition(sep)
    ip = ip.strip("[]")
    if not name or not ip:
        raise InvalidParameterError(f"invalid --add-host {entry!r}: use name:ip")
    if ip == "host-gateway":
        ip = host_gateway
    return name, ip


def container_hosts(
    hostname: str, domainname: str, ips: Sequence[str], extra_hosts: Sequence[str], host_gateway: str
) -> str:
    text = HOSTS_HEADER
    names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
    for ip in ips or ["127.0.1.1"]:  # without an address (none mode) the hostname still resolves
        text += f"{ip}\t{names}\n"
    for entry in extra_hosts:
        name, ip = parse_extra_host(entry, host_gateway)
        text += f"{ip}\t{name}\n"
    return text
