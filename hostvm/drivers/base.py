"""The driver interface: start a VM from a VMSpec, tell its real state, stop it."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..domain import ShareDevice, VMSpec
from ..errors import PymachineError


class DriverState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do. Callers branch on these, never on the driver's name."""

    remote: bool  # machines may live on another host (a remote libvirt URI)
    graceful_shutdown: bool  # can ask the guest to power off (ACPI power button)
    hostfwd_add: bool  # can add a host→guest port forward to a running VM (QEMU monitor hostfwd_add)
    survives_cli_exit: bool = True  # the VM keeps running after the process that started it exits
    virtiofs: bool = False  # can attach host folders over virtiofs (a vhost-user-fs device, shared memory)
    virtio_9p: bool = False  # can attach host folders over virtio-9p (served by QEMU itself)
    save_state: bool = False  # can save a running VM to a file and restore it (savestate.py)
    share_hotplug: bool = False  # can unplug and re-plug virtiofs devices of a running VM (around a save)
    existing_host: bool = False  # no VM: the agent runs on a host provisioned over SSH (remote_host.py)
    # can give the VM the engine socket's virtio-serial port with its host end in the machine folder (a
    # remote libvirt's QEMU would listen on that other host: docker.sock stays on SSH there)
    engine_port: bool = False


class Driver(abc.ABC):
    name: str
    capabilities: Capabilities

    @abc.abstractmethod
    def start(self, spec: VMSpec) -> None:
        """Launch the VM and return once the hypervisor runs it (not when the guest is ready)."""

    @abc.abstractmethod
    def state(self, machine: str) -> DriverState:
        """The real state, asked of the hypervisor each time (never from a cached file)."""

    @abc.abstractmethod
    def pid(self, machine: str) -> int | None:
        """The QEMU process id on this host, when known."""

    @abc.abstractmethod
    def request_shutdown(self, machine: str) -> None:
        """Ask the guest to power off (ACPI); only called when capabilities.graceful_shutdown."""

    @abc.abstractmethod
    def force_stop(self, machine: str) -> None:
        """Pull the plug. A VM that is already gone is not an error."""

    def cleanup(self, machine: str) -> None:  # noqa: B027 - optional hook
        """Forget leftovers of a stopped VM (definitions, stale pid files)."""

    def monitor_command(self, machine: str, command: str) -> str:
        """One QEMU human-monitor (HMP) command on the running VM; its text reply. Only when
        capabilities.hostfwd_add (hostagent/qemufwd.py adds and removes published ports through it)."""
        raise NotImplementedError("this driver has no QEMU monitor")

    def hostfwd_add(self, machine: str, host_port: int, guest_port: int) -> None:
        reply = self.monitor_command(machine, f"hostfwd_add net0 tcp:127.0.0.1:{host_port}-:{guest_port}")
        if reply.strip():
            raise PymachineError(f"QEMU refused the port forward {host_port}->{guest_port}: {reply.strip()}")

    def save(self, machine: str, path: Path) -> int | None:
        """Write the VM's state to `path` (a new file) and end the VM; only when capabilities.save_state.
        Returns the file's CRC-32 when the driver saw the bytes go by (None: the caller reads it back)."""
        raise NotImplementedError("this driver cannot save a VM's state")

    def restore(self, spec: VMSpec, path: Path, paused: bool = False) -> None:
        """Start the VM of `spec` from a state that `save` wrote; it runs when this returns (`paused`: it
        waits, vCPUs stopped, for `unpause`)."""
        raise NotImplementedError("this driver cannot restore a VM's state")

    def detach_share(self, machine: str, dev: ShareDevice) -> None:
        """Unplug a virtiofs device (the guest has unmounted it); only when capabilities.share_hotplug."""
        raise NotImplementedError("this driver cannot unplug share devices")

    def attach_share(self, machine: str, dev: ShareDevice) -> None:
        raise NotImplementedError("this driver cannot plug share devices")

    # -- the resource saver (hostagent/idle.py): freeze the vCPUs, keep memory and devices ---------------
    def pause(self, machine: str) -> None:
        """Stop the guest's vCPUs (it keeps its memory; QEMU then uses no CPU). Idempotent."""
        raise NotImplementedError("this driver cannot pause a VM")

    def unpause(self, machine: str) -> None:
        """Let a paused guest run again. Idempotent: a running guest is not an error."""
        raise NotImplementedError("this driver cannot pause a VM")

    def paused(self, machine: str) -> bool:
        """Whether the hypervisor holds the guest paused (asked each time)."""
        return False

    def describe(self) -> str:
        """Where VMs run, for `inspect` and `doctor` (e.g. the libvirt URI)."""
        return self.name
