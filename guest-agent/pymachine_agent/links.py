"""Legacy container links (`docker run --link NAME[:ALIAS]`): what dockerd gives a linked container.

On the default bridge a link adds `/etc/hosts` lines for the alias, the target's hostname and name, and the
environment dockerd sets (`ALIAS_NAME=/parent/alias`, `ALIAS_PORT=tcp://ip:port` for the lowest exposed port,
`ALIAS_PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO]` for each, `ALIAS_ENV_<key>` for the target's environment but
HOME and PATH). On a user network a link is only a name the linking container resolves (dockerd answers it
from its embedded DNS; here it is a hosts line), without environment. The target must be running at start.
"""

from __future__ import annotations

from dataclasses import dataclass


class LinkError(ValueError):
    """A malformed link (400)."""


@dataclass(frozen=True)
class Link:
    name: str  # the target container's name, without the leading /
    alias: str
    network: str = ""  # "" = the default bridge (legacy link with environment)

    def to_docker(self, parent: str) -> str:
        """HostConfig.Links' form, as dockerd shows it: `/target:/parent/alias`."""
        return f"/{self.name}:/{parent}/{self.alias}"


def parse(entry: str, network: str = "") -> Link:
    """`name`, `name:alias`, or dockerd's own `/name:/parent/alias`."""
    name, _, alias = entry.partition(":")
    name = name.strip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else name
    if not name or not alias or "/" in name:
        raise LinkError(f"invalid link {entry!r}: expected NAME or NAME:ALIAS")
    return Link(name, alias, network)


def env(parent: str, link: Link, ip: str, exposed: list[str], target_env: list[str]) -> list[str]:
    """dockerd's Link.ToEnv for the link `link` of container `parent` to a target at `ip`."""
    alias = link.alias.upper().replace("-", "_")
    ports = sorted(_port(p) for p in exposed)
    out = []
    if ports:
        default = min(ports, key=lambda p: (p[0], p[1] != "tcp"))
        out.append(f"{alias}_PORT={default[1]}://{ip}:{default[0]}")
    for number, proto in ports:
        prefix = f"{alias}_PORT_{number}_{proto.upper()}"
        out += [
            f"{prefix}={proto}://{ip}:{number}",
            f"{prefix}_ADDR={ip}",
            f"{prefix}_PORT={number}",
            f"{prefix}_PROTO={proto}",
        ]
    out.append(f"{alias}_NAME=/{parent}/{link.alias}")
    for item in target_env:
        key, eq, value = item.partition("=")
        if eq and key not in ("HOME", "PATH"):
            out.append(f"{alias}_ENV_{key}={value}")
    return out


def host_names(link: Link, hostname: str) -> list[str]:
    """The names a link's hosts line gives the target: its alias, hostname, and name if that differs."""
    names = [link.alias, hostname]
    if link.alias != link.name:
        names.append(link.name)
    return list(dict.fromkeys(n for n in names if n))


def _port(key: str) -> tuple[int, str]:
    number, _, proto = key.partition("/")
    return int(number), (proto or "tcp").lower()
