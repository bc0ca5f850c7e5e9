"""A machine's status as one typed value for both front ends: the machine, its host agent's answer, and the
ENGINE summary (`ready`, `degraded: <reason>`, `down[: <reason>]`, `-`) that `list` and the app show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import PymachineError
from .machines import Machine, list_machines


def host_agent_status(m: Machine, repair: bool = True) -> dict[str, Any] | None:
    """The host agent's status for a running machine (repairing a dead agent), None for any other state:
    a stopped machine has no agent to ask, and asking would slow `list` down."""
    if m.state != "running":
        return None
    from pymachine.hostvm.hostagent import launcher

    try:
        return launcher.status(m.name, repair=repair)
    except (OSError, PymachineError) as exc:
        return {"running": False, "state": "error", "error": str(exc), "forwards": []}


def engine_summary(status: dict[str, Any] | None) -> str:
    """One word (and a reason) for the ENGINE column: `ready`, `degraded: <reason>`, `down[: <reason>]`,
    or `-` when the machine is not running."""
    if status is None:
        return "-"
    state = status.get("state")
    if status.get("error"):
        return f"down: {status['error']}"
    if not status.get("running") or state == "stopped":
        return "down"
    if state == "unresponsive":
        return "degraded: host agent does not answer"
    if state == "restarting":
        return "degraded: host agent restarted"
    if state != "ready":
        link = status.get("link") or {}
        if link.get("state") != "up":
            return f"degraded: link {link.get('state') or state} ({link.get('last_error') or 'connecting'})"
        engine = status.get("engine_socket") or {}
        return f"degraded: engine {engine.get('health') or state}"
    bad = [f for f in status.get("forwards") or [] if f.get("health") != "ok"]
    if bad:
        ports = ", ".join(f"{f.get('host_port')}/{f.get('proto', 'tcp')} {f.get('health')}" for f in bad)
        return f"degraded: {ports}"
    broken = [s for s in status.get("shares") or [] if s.get("state") in ("failed", "lost")]
    if broken:  # an sshfs share the host agent could not mount: containers would see an empty folder
        return "degraded: " + "; ".join(
            f"share {s.get('path')} {s.get('state')}: {s.get('error')}" for s in broken
        )
    return "ready"


def link_state(status: dict[str, Any] | None) -> str | None:
    if status is None:
        return None
    link = status.get("link")
    return link.get("state") if isinstance(link, dict) else "down"


def state_label(machine: Any, status: dict[str, Any] | None) -> str:
    """What `list`, `inspect` and the desktop app show: `running (idle, paused)` while the resource saver
    holds the machine paused (from its host agent's `status`), else the machine's own state."""
    if machine.state == "stopped" and getattr(machine, "saved_state", None):
        return "saved"  # `stop` saved its state: the next start resumes it
    saver = (status or {}).get("saver") or {}
    paused = machine.state == "running" and saver.get("state") == "paused"
    return f"{machine.state} (idle, paused)" if paused else str(machine.state)


def not_running(machine: Machine) -> PymachineError:
    """The refusal of a verb that needs `machine` running, its state in the words `list` uses ("saved")."""
    name = machine.name
    return PymachineError(
        f"machine '{name}' is {state_label(machine, None)}", hint=f"start it: pymachine start {name}"
    )


@dataclass(frozen=True)
class PortForward:
    """One published port as the host agent carries it: `path` "qemu" (QEMU's user network listens on the
    host: a local machine) or "ssh" (the host agent listens and forwards over the SSH link: remote machines,
    IPv6 host addresses, a QEMU monitor that is unavailable, a machine paused by the resource saver)."""

    proto: str
    host_ip: str
    host_port: int
    guest_port: int
    container: str
    path: str
    health: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PortForward:
        return cls(
            proto=str(d.get("proto") or "tcp"),
            host_ip=str(d.get("host_ip") or ""),
            host_port=int(d.get("host_port") or 0),
            guest_port=int(d.get("guest_port") or 0),
            container=str(d.get("container") or ""),
            path=str(d.get("path") or "ssh"),  # an agent from before the QEMU path had only SSH
            health=str(d.get("health") or ""),
        )

    def label(self) -> str:
        return f"{self.host_ip}:{self.host_port}/{self.proto} via {self.path}"


def port_forwards(status: dict[str, Any] | None) -> list[PortForward]:
    return [PortForward.from_json(f) for f in (status or {}).get("forwards") or [] if isinstance(f, dict)]


def ports_summary(status: dict[str, Any] | None) -> str:
    """The PORTS column of `list`: `8080/tcp qemu, 5353/udp ssh`, or `-`."""
    found = port_forwards(status)
    return ", ".join(f"{p.host_port}/{p.proto} {p.path}" for p in found) or "-"


@dataclass(frozen=True)
class MachineStatus:
    machine: Machine
    engine: str  # engine_summary: `ready`, `degraded: …`, `down…`, `-`
    link: str | None  # up / down / None when not running
    forwards: list[dict[str, Any]] = field(default_factory=list)
    host_agent: dict[str, Any] | None = None  # the agent's own status answer (None: not running)
    state: str = ""  # state_label: the machine's state, or `running (idle, paused)`

    @property
    def ready(self) -> bool:
        return self.engine == "ready"

    @property
    def ports(self) -> list[PortForward]:
        return port_forwards({"forwards": self.forwards})

    @property
    def engine_path(self) -> str | None:
        """How docker.sock reaches the guest agent now: "serial" (the VM's virtio-serial port,
        hostagent/serialpath.py), "fast" (QEMU's user network, hostagent/fastpath.py), "ssh", or None (no
        agent, or one from before the fast path)."""
        engine = (self.host_agent or {}).get("engine_socket") or {}
        return engine.get("via")

    @classmethod
    def of(cls, m: Machine, status: dict[str, Any] | None) -> MachineStatus:
        forwards = list((status or {}).get("forwards") or [])
        return cls(m, engine_summary(status), link_state(status), forwards, status, state_label(m, status))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.machine.to_json(),
            "state": self.state or self.machine.state,
            "engine": self.engine,
            "link": self.link,
            "forwards": self.forwards,
        }


def machine_status(m: Machine, repair: bool = True) -> MachineStatus:
    return MachineStatus.of(m, host_agent_status(m, repair))


def all_statuses(repair: bool = True) -> list[MachineStatus]:
    return [machine_status(m, repair) for m in list_machines()]
