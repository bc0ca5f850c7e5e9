"""VM drivers behind one interface; callers read `Driver.capabilities`, never the driver's name."""

from __future__ import annotations

from .base import Capabilities, Driver, DriverState

__all__ = ["Capabilities", "Driver", "DriverState", "get_driver"]


def get_driver(name: str, connect: str | None = None) -> Driver:
    """The driver called `name` (config's `driver`); imported lazily: the qemu driver needs no libvirt."""
    if name == "libvirt":
        from .libvirt import LibvirtDriver

        return LibvirtDriver(connect)
    if name == "qemu":
        from .qemu import QemuDriver

        return QemuDriver()
    if name == "ssh":
        from .ssh import SshDriver

        return SshDriver(connect)
    from ..errors import UsageError

    raise UsageError(f"unknown driver '{name}'", hint="use --driver libvirt, qemu or ssh")
