"""Which guest port events become which host listeners: pure rule logic, no sockets.

The guest agent streams `{"type": "port", "action": "add"|"remove", "id", "container", "proto", "host_ip",
"host_port", "guest_port"}` (docs/contracts.md §4); after every (re)connect it sends `hello` and then an `add`
for each port still published. `PortTable` turns that stream into actions: open a listener, close one,
retarget one, and the ack to send back. The socket side (portforward.py) carries the actions out and reports
whether a bind worked, which decides the ack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

Proto = Literal["tcp", "udp"]
Key = tuple[str, str, int]  # (proto, host_ip, host_port)

# An empty or wildcard HostIp from a docker client means "not asked": stay on loopback (secure by default).
DEFAULT_HOST_IP = "127.0.0.1"


class BadPortEvent(ValueError):
    pass


@dataclass(frozen=True)
class PortRule:
    proto: Proto
    host_ip: str
    host_port: int
    guest_port: int
    container: str

    @property
    def key(self) -> Key:
        return (self.proto, self.host_ip, self.host_port)

    def label(self) -> str:
        return f"{self.host_ip}:{self.host_port}/{self.proto}"

    def to_json(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "guest_port": self.guest_port,
            "container": self.container,
        }


@dataclass(frozen=True)
class PortEvent:
    action: Literal["add", "remove"]
    id: str
    rule: PortRule


def normalise_host_ip(value: object) -> str:
    # Docker publishes on every interface when no address is given; a desktop VM's ports stay on this
    # machine unless the user names one (an explicit 0.0.0.0 is honoured). Only IP literals are bound: a
    # name ("0", a hostname) would be resolved by bind(), and "0" means every interface. The guest agent
    # refuses those on the API already; this keeps a guest from slipping one past the host.
    if value in (None, "", "localhost"):
        return DEFAULT_HOST_IP
    try:
        return str(ipaddress.ip_address(str(value).strip("[]")))
    except ValueError:
        raise BadPortEvent(f"host_ip is not an IP address: {str(value)[:80]!r}") from None


def _port(value: object, what: str) -> int:
    try:
        port = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BadPortEvent(f"{what} is not a number: {value!r}") from None
    if not 0 < port < 65536:
        raise BadPortEvent(f"{what} out of range: {port}")
    return port


def parse_event(obj: dict[str, Any]) -> PortEvent:
    """A port event from the guest's JSON, validated; raises BadPortEvent."""
    if obj.get("type") != "port":
        raise BadPortEvent(f"not a port event: {obj.get('type')!r}")
    action = obj.get("action")
    if action not in ("add", "remove"):
        raise BadPortEvent(f"unknown port action {action!r}")
    proto = str(obj.get("proto") or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise BadPortEvent(f"unknown protocol {proto!r}")
    host_port = _port(obj.get("host_port"), "host_port")
    guest_port = _port(obj.get("guest_port", host_port), "guest_port")
    rule = PortRule(
        proto=proto,  # type: ignore[arg-type]
        host_ip=normalise_host_ip(obj.get("host_ip")),
        host_port=host_port,
        guest_port=guest_port,
        container=str(obj.get("container") or ""),
    )
    return PortEvent(action, str(obj.get("id") or ""), rule)


@dataclass(frozen=True)
class Open:
    rule: PortRule


@dataclass(frozen=True)
class Close:
    rule: PortRule


@dataclass(frozen=True)
class Retarget:
    """Same host address, new guest side (e.g. the guest agent restarted): keep the listener."""

    rule: PortRule


Action = Open | Close | Retarget


@dataclass
class PortTable:
    """The rules the host should be listening for; `stale` marks rules not yet confirmed after a hello."""

    rules: dict[Key, PortRule] = field(default_factory=dict)
    stale: set[Key] = field(default_factory=set)

    def on_hello(self) -> None:
        """A new event stream began: every rule must be re-announced or it goes at `end_resync`."""
        self.stale = set(self.rules)

    def end_resync(self) -> list[Action]:
        gone = [self.rules.pop(k) for k in sorted(self.stale) if k in self.rules]
        self.stale = set()
        return [Close(r) for r in gone]

    def apply(self, event: PortEvent) -> list[Action]:
        rule = event.rule
        if event.action == "remove":
            self.stale.discard(rule.key)
            held = self.rules.get(rule.key)
            # A late remove for a port another container now holds must not close that one.
            if held is None or (rule.container and held.container and held.container != rule.container):
                return []
            del self.rules[rule.key]
            return [Close(held)]
        self.stale.discard(rule.key)
        held = self.rules.get(rule.key)
        self.rules[rule.key] = rule
        if held is None:
            return [Open(rule)]
        if held == rule:
            return []
        return [Retarget(rule)]

    def forget(self, key: Key) -> None:
        """A listener could not be opened: drop the rule so a later add tries again."""
        self.rules.pop(key, None)
        self.stale.discard(key)

    def target(self, key: Key) -> PortRule | None:
        return self.rules.get(key)


def in_use_error(rule: PortRule) -> str:
    """The refusal the guest agent passes back to `docker run` (wording fixed by docs/contracts.md §4)."""
    return f"host port {rule.host_ip}:{rule.host_port} is already in use"
