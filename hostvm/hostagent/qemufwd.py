"""Published ports through QEMU's own user-network forwarding (`hostfwd_add`/`hostfwd_remove` on the monitor).

On a local machine, a published port does not need the SSH link at all: QEMU's user network (slirp) can listen
on the host address itself and hand each connection to the guest's uplink address (10.0.2.15), where the guest
agent's DNAT (or its proxy) takes it to the container exactly as it does for the SSH path's 127.0.0.1 (the
guest holds the published port on 0.0.0.0). No crypto, no paramiko pump threads: bench/forward.py measures it.

The monitor is asked, never trusted to be there: when it cannot be reached (a remote libvirt, a QMP socket
gone, a QEMU that refuses the rule) the caller falls back to the SSH listener, which also names the precise
bind error ("already in use", "needs privileges"). QEMU is the record of what is forwarded (`info usernet`
lists it), so a host agent killed with -9 or a restarted QEMU is reconciled against that list, never against a
file of ours: every rule on the machine's network except the sshd one (guest port 22, which no container
can publish: sshd holds it) and the engine socket's relay (guest port 1021, fastpath.py) belongs to the
published ports.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymachine_agent.fastpath import RELAY_GUEST_PORT

from .ports import Key, PortRule

log = logging.getLogger(__name__)
Monitor = Callable[[str], str]  # one HMP command line → QEMU's text reply ("" when it succeeded)
NETDEV = "net0"  # domain.VMSpec.netdev()'s id
SSHD_GUEST_PORT = 22
ENV_PATH = "PYMACHINE_PORT_PATH"  # "ssh" forces the SSH path for every port (bench, debugging)
_ROW = re.compile(r"^\s*(TCP|UDP)\[HOST_FORWARD\]\s+\S+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\b")


class MonitorError(Exception):
    """The monitor could not be reached, or QEMU refused the rule: use the SSH path."""


@dataclass(frozen=True)
class HostFwd:
    """One `hostfwd` rule as QEMU lists it."""

    proto: str
    host_ip: str
    host_port: int
    guest_ip: str
    guest_port: int

    @property
    def key(self) -> Key:
        return (self.proto, self.host_ip, self.host_port)

    @property
    def ours(self) -> bool:
        """A published port's rule: not sshd's, not the engine socket's fast path (fastpath.py), which the
        reconcile must leave alone and `list` must not show as a container's port."""
        return self.guest_port not in (SSHD_GUEST_PORT, RELAY_GUEST_PORT)


def parse_usernet(text: str) -> list[HostFwd]:
    """The HOST_FORWARD rows of `info usernet` (connections and other sockets are left out)."""
    out = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            proto, hip, hport, gip, gport = m.groups()
            out.append(HostFwd(proto.lower(), hip, int(hport), gip, int(gport)))
    return out


def spec(rule: PortRule) -> str:
    """The rule as hostfwd_add's argument: `tcp:127.0.0.1:8080-:8080` (guest side: the default 10.0.2.15)."""
    return f"{rule.proto}:{rule.host_ip}:{rule.host_port}-:{rule.guest_port}"


def supported(rule: PortRule, udp: bool = False) -> bool:
    """QEMU 7.2's hostfwd takes IPv4 host addresses only; an IPv6 one stays on the SSH path. UDP only where
    the user network passes the guest's datagrams (`udp`): with `restrict=on`, which our machines use so the
    guest reaches nothing through QEMU, libslirp's udp_input drops every guest datagram but DHCP and TFTP, so
    a container's replies would never leave the guest: UDP stays on the SSH path there."""
    if rule.proto == "udp" and not udp:
        return False
    try:
        return ipaddress.ip_address(rule.host_ip).version == 4
    except ValueError:
        return False


class QemuForwards:
    def __init__(self, monitor: Monitor, netdev: str = NETDEV, udp: bool = False) -> None:
        self._monitor = monitor
        self.netdev = netdev
        self.udp = udp  # the user network carries UDP replies (not with restrict=on: see `supported`)

    def supports(self, rule: PortRule) -> bool:
        return supported(rule, self.udp)

    def _run(self, command: str) -> str:
        try:
            return self._monitor(command).strip()
        except Exception as exc:  # noqa: BLE001 - OSError, QMP/libvirt errors: all mean "no monitor now"
            raise MonitorError(f"QEMU monitor unavailable: {exc}") from exc

    def listed(self) -> list[HostFwd]:
        return parse_usernet(self._run("info usernet"))

    def add(self, rule: PortRule) -> None:
        """Listen on the host now (QEMU binds before it answers: the port is live when this returns). A rule
        already there with the same target is adopted (a new host agent after kill -9 of the old one)."""
        reply = self._run(f"hostfwd_add {self.netdev} {spec(rule)}")
        if not reply:
            return
        same = [f for f in self.listed() if f.key == rule.key]
        if same and same[0].guest_port == rule.guest_port:
            return
        raise MonitorError(f"QEMU refused hostfwd {spec(rule)}: {reply}")

    def remove(self, key: Key) -> None:
        proto, host_ip, host_port = key
        reply = self._run(f"hostfwd_remove {self.netdev} {proto}:{host_ip}:{host_port}")
        if reply and "removed" not in reply and "not found" not in reply:
            raise MonitorError(f"QEMU did not remove hostfwd {proto}:{host_ip}:{host_port}: {reply}")

    def reconcile(
        self, wanted: Iterable[PortRule], *, remove_stale: bool = True
    ) -> tuple[list[PortRule], list[HostFwd]]:
        """Make QEMU's rules the wanted ones: add the missing (a restarted or restored QEMU lost them), remove
        the rest of ours (a container that went while no host agent ran) unless `remove_stale` is off: before
        the guest's port replay a new host agent knows none of the ports yet. Returns (added, removed)."""
        have = {f.key: f for f in self.listed() if f.ours}
        want = {r.key: r for r in wanted}
        removed = []
        for key, fwd in have.items():
            if not remove_stale and key not in want:
                continue
            if key not in want or want[key].guest_port != fwd.guest_port:
                self.remove(key)
                removed.append(fwd)
        added = []
        for key, rule in want.items():
            if key not in have or have[key].guest_port != rule.guest_port:
                self.add(rule)
                added.append(rule)
        return added, removed


def machine_forwards(name: str) -> QemuForwards | None:
    """The monitor path for machine `name`'s host agent, or None: no machine config (an agent run against a
    test sshd), a driver without a local monitor (remote libvirt), or PYMACHINE_PORT_PATH=ssh."""
    if os.environ.get(ENV_PATH, "").lower() == "ssh":
        return None
    monitor = machine_monitor(name)
    # every machine's netdev is restrict=on (domain.VMSpec.netdev): TCP only
    return QemuForwards(monitor, udp=False) if monitor is not None else None


def machine_monitor(name: str) -> Monitor | None:
    """HMP commands to machine `name`'s QEMU through its driver, or None where there is no local monitor (no
    machine config behind this agent, a remote libvirt)."""
    from .. import machines

    try:
        driver = machines.driver_for(machines.load_config(name))
    except Exception:  # noqa: BLE001 - no machine behind this agent
        return None
    if not driver.capabilities.hostfwd_add:
        return None
    return lambda command: driver.monitor_command(name, command)
