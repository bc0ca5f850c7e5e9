"""nftables: masquerade per network, isolation between networks, DNAT for published ports, and the guard that
keeps containers away from the guest's own services.

The agent owns one table (`table ip pymachine`) and always rewrites it whole from its records, in one
`nft -f -` transaction ("add table; delete table; table {...}" is atomic): no rule can be left behind by a
partial update, and a restarted agent converges by rendering once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .model import NetworkError


@dataclass(frozen=True)
class BridgeNet:
    bridge: str
    subnet: str
    internal: bool = False
    masquerade: bool = True


@dataclass(frozen=True)
class Dnat:
    proto: str
    host_port: int
    container_ip: str
    container_port: int


def render(
    table: str,
    nets: Sequence[BridgeNet],
    dnats: Sequence[Dnat],
    proxied: Sequence[tuple[str, int]] = (),
    young: Sequence[tuple[int, int]] = (),
) -> str:
    """The whole table as nft syntax (pure, unit-testable). `proxied`: (proto, port) of published ports that a
    userland proxy in the guest serves (port_mode "proxy"), which containers may reach like any client.
    `young`: (host port, relay port) of TCP ports redirected to their relay until the server listens
    (young.py); the relay port is opened to containers like a proxy's."""
    out = [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]
    out += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump published",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump published",
        "  }",
        "  chain published {",
    ]
    for d in dnats:
        out.append(f"    {d.proto} dport {d.host_port} dnat to {d.container_ip}:{d.container_port}")
    for host_port, relay_port in young:
        out.append(f"    tcp dport {host_port} redirect to :{relay_port}")
    out += ["  }", "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
    for n in nets:
        # 127.0.0.1:port DNATed to a container leaves with a loopback source: give it the bridge's address.
        out.append(f'    oifname "{n.bridge}" ip saddr 127.0.0.0/8 masquerade')
        # a container reaching a published port of its own network through a guest address: without this
        # the server would answer it directly, from an address it never talked to
        # (postrouting has no input interface: "from this network" is the source subnet)
        out.append(f'    oifname "{n.bridge}" ip saddr {n.subnet} ct status dnat masquerade')
        if n.masquerade and not n.internal:
            out.append(f'    ip saddr {n.subnet} oifname != "{n.bridge}" masquerade')
    out += ["  }", "  chain forward {", "    type filter hook forward priority filter; policy accept;"]
    out.append("    ct status dnat accept")  # published ports are public: any network may reach them
    bridges = [n.bridge for n in nets]
    for n in nets:
        if n.internal:
            out.append(f'    iifname "{n.bridge}" oifname != "{n.bridge}" drop')
            out.append(f'    oifname "{n.bridge}" iifname != "{n.bridge}" drop')
        others = [b for b in bridges if b != n.bridge]
        if others:
            names = ", ".join(f'"{b}"' for b in others)
            out.append(f'    iifname "{n.bridge}" oifname {{ {names} }} drop')
    out += ["  }"]
    out += _guard(nets, [*proxied, *(("tcp", relay) for _, relay in young)])
    out += ["}"]
    return "\n".join(out) + "\n"


def _guard(nets: Sequence[BridgeNet], proxied: Sequence[tuple[str, int]]) -> list[str]:
    """Containers reach no service of the guest itself: sshd (the way to VM root), whatever listens on the
    guest's 127.0.0.1 (the bridges need route_localnet=1 for published ports on 127.0.0.1, so a forged frame
    to 127.0.0.1 from a container would otherwise be delivered), nor anything on 0.0.0.0 reached through a
    gateway or the uplink address. Replies to the guest's own connections (DNAT'd published ports, the proxy's
    relays) and ICMP errors are `established,related`; published ports go through DNAT to the forward hook,
    so only a proxy's listener needs opening here. The embedded DNS lives in each container's namespace."""
    if not nets:
        return []
    names = ", ".join(f'"{n.bridge}"' for n in nets)
    out = [
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {{ {names} }} jump from_containers",
        "  }",
        "  chain from_containers {",
        "    ct state established,related accept",
        "    icmp type echo-request accept",  # `ping` of the gateway works, as with Docker
    ]
    for proto in ("tcp", "udp"):
        ports = sorted({port for p, port in proxied if p == proto})
        if ports:
            out.append(f"    {proto} dport {{ {', '.join(map(str, ports))} }} accept")
    out += ["    drop", "  }"]
    return out


def _nft(script: str, what: str) -> str:
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkError("nft is not installed in the guest (apt-get install nftables)") from None
    if proc.returncode != 0:
        raise NetworkError(f"{what} failed: {proc.stderr.strip()}")
    return proc.stdout


def apply(
    table: str,
    nets: Sequence[BridgeNet],
    dnats: Sequence[Dnat],
    proxied: Sequence[tuple[str, int]] = (),
    young: Sequence[tuple[int, int]] = (),
) -> None:
    _nft(render(table, nets, dnats, proxied, young), f"programming nftables table {table}")


def delete(table: str) -> None:
    _nft(f"table ip {table}\ndelete table ip {table}\n", f"deleting nftables table {table}")


DNS_TABLE = "pymachine_dns"


def dns_redirect(udp_port: int, tcp_port: int) -> None:
    """Inside a container's namespace (call from a thread setns()'d there): 127.0.0.11:53 → the agent's
    listener ports. Conntrack reverses the translation for replies."""
    _nft(
        f"table ip {DNS_TABLE}\ndelete table ip {DNS_TABLE}\ntable ip {DNS_TABLE} {{\n"
        "  chain output {\n    type nat hook output priority -100; policy accept;\n"
        f"    ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{udp_port}\n"
        f"    ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:{tcp_port}\n"
        "  }\n}\n",
        "redirecting 127.0.0.11:53 to the embedded DNS",
    )


def rules(table: str) -> list[str]:
    """Every rule of the table as text (tests count them; empty when the table does not exist)."""
    proc = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    found = []
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule:
            found.append(f"{rule['chain']}: {json.dumps(rule['expr'], sort_keys=True)}")
    return found
