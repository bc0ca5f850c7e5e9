"""The libvirt driver: transient domains named `pymachine-<name>`, created from `domain.domain_xml`.

Transient on purpose: a domain exists exactly while its QEMU runs, so after a `kill -9` of QEMU or a host
restart libvirt itself reports the machine as gone, and no stale definition can disagree with reality.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from .. import paths
from ..domain import (
    OWNER_NS,
    ShareDevice,
    VMSpec,
    domain_name,
    domain_xml,
    filesystem_xml,
    preallocated_for_restore,
)
from ..errors import PymachineError
from ..shares import virtiofsd_binary
from .base import Capabilities, Driver, DriverState
from .procscan import find_qemu_pid

log = logging.getLogger(__name__)

SERVICE_HINT = (
    "start libvirtd: 'systemctl start libvirtd' (or, without systemd, 'packaging/services.sh libvirtd'); "
    "or create the machine with --driver qemu"
)


def default_uri() -> str:
    return "qemu:///system" if hasattr(os, "geteuid") and os.geteuid() == 0 else "qemu:///session"


def is_local(uri: str) -> bool:
    return not urlparse(uri).hostname


class LibvirtDriver(Driver):
    name = "libvirt"
    capabilities = Capabilities(
        remote=True, graceful_shutdown=True, hostfwd_add=True, save_state=True, share_hotplug=True
    )

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or default_uri()
        self._conn = None
        # folders of this host only reach a VM on this host; virtiofs needs our own virtiofsd (libvirt >= 8.5
        # takes an externally launched one through <source socket=...>)
        local = is_local(self.uri) and sys.platform.startswith("linux")
        self.capabilities = replace(
            type(self).capabilities,
            virtiofs=local and virtiofsd_binary() is not None,
            virtio_9p=local,
            # a remote QEMU's hostfwd would listen on that other host: published ports stay on SSH there
            hostfwd_add=is_local(self.uri),
            engine_port=is_local(self.uri),
        )
        if not is_local(self.uri):  # a state file and device hot-plug name paths of this computer
            self.capabilities = replace(self.capabilities, save_state=False, share_hotplug=False)

    def describe(self) -> str:
        return f"libvirt {self.uri}"

    # -- connection -------------------------------------------------------------------------------------
    def _libvirt(self):  # type: ignore[no-untyped-def]
        try:
            import libvirt
        except ImportError as exc:
            raise PymachineError(
                "the libvirt driver needs libvirt-python",
                hint="pip install 'pymachine[libvirt]' (needs libvirt-dev, pkg-config), or use --driver qemu",
            ) from exc
        # libvirt prints every error to stderr by default; ours are turned into PymachineError instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        return libvirt

    def conn(self):  # type: ignore[no-untyped-def]
        if self._conn is None:
            libvirt = self._libvirt()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise PymachineError(
                    f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}", hint=SERVICE_HINT
                ) from exc
        return self._conn

    def _lookup(self, machine: str):  # type: ignore[no-untyped-def]
        """This machine's domain, or None. A same-named domain of another machine folder is not ours; one
        without our metadata is (made by an older pymachine, or by hand under our naming scheme)."""
        dom = self._lookup_any(machine)
        if dom is None:
            return None
        owner = self._owner(dom)
        return dom if owner in (None, str(paths.machine(machine).dir)) else None

    def _owner(self, dom) -> str | None:  # type: ignore[no-untyped-def]
        libvirt = self._libvirt()
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS, 0)
        except libvirt.libvirtError:
            return None  # no metadata (made by hand or by another tool), or the domain just vanished
        import xml.etree.ElementTree as ET

        return ET.fromstring(xml).get("dir")

    def _lookup_any(self, machine: str):  # type: ignore[no-untyped-def]
        libvirt = self._libvirt()
        try:
            return self.conn().lookupByName(domain_name(machine))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise PymachineError(f"libvirt lookup of {domain_name(machine)} failed: {exc}") from exc

    # -- interface --------------------------------------------------------------------------------------
    def start(self, spec: VMSpec) -> None:
        libvirt = self._libvirt()
        if is_local(self.uri):
            _warn_kvm_permissions()
        old = self._lookup_any(spec.name)
        if old is not None:
            if self._active(old):
                owner = self._owner(old)
                raise PymachineError(
                    f"libvirt already runs a domain {spec.domain_name}"
                    + (f" for the machine folder {owner}" if owner else " that pymachine did not create"),
                    hint="machine names are shared by everyone on this libvirt daemon: pick another name, "
                    "or stop that one",
                )
            old.undefine()  # a shut-off persistent leftover (e.g. defined by hand) would block createXML
        xml = domain_xml(spec)
        try:
            self.conn().createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise PymachineError(
                f"libvirt refused to start {spec.domain_name}: {exc.get_error_message()}",
                hint="see the libvirt log (/var/log/libvirt/qemu/ or ~/.cache/libvirt/qemu/log/)",
                log_path=spec.console_log,
            ) from exc

    def _active(self, dom) -> bool:  # type: ignore[no-untyped-def]
        """isActive() that treats a transient domain vanishing under us (QEMU just exited) as stopped."""
        libvirt = self._libvirt()
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise PymachineError(f"libvirt cannot tell the state of {dom.name()}: {exc}") from exc

    def state(self, machine: str) -> DriverState:
        dom = self._lookup(machine)
        return DriverState.RUNNING if dom is not None and self._active(dom) else DriverState.STOPPED

    def pid(self, machine: str) -> int | None:
        if not is_local(self.uri) or self.state(machine) is DriverState.STOPPED:
            return None
        return find_qemu_pid(f"guest={domain_name(machine)},")

    def request_shutdown(self, machine: str) -> None:
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        if dom is None:
            return
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            log.debug("ACPI shutdown of %s: %s", machine, exc)

    def force_stop(self, machine: str) -> None:
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        if dom is None:
            return
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if self._active(dom):
                raise PymachineError(
                    f"cannot stop {domain_name(machine)}: {exc.get_error_message()}"
                ) from exc

    def cleanup(self, machine: str) -> None:
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        try:
            if dom is not None and not self._active(dom) and dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError as exc:
            log.debug("cleanup of %s: %s", machine, exc)

    # -- saved state (libvirt's save/restore: the domain XML travels inside the file) ---------------------
    def save(self, machine: str, path: Path) -> int | None:
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        if dom is None:
            raise PymachineError(f"machine '{machine}' is not running")
        try:
            dom.saveFlags(str(path), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except libvirt.libvirtError as exc:
            raise PymachineError(f"libvirt could not save {dom.name()}: {exc.get_error_message()}") from exc
        return None  # libvirt writes the file itself

    def restore(self, spec: VMSpec, path: Path, paused: bool = False) -> None:
        libvirt = self._libvirt()
        if self._lookup_any(spec.name) is not None and self.state(spec.name) is DriverState.RUNNING:
            raise PymachineError(f"libvirt already runs a domain {spec.domain_name}")
        flag = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
        try:
            saved = self.conn().saveImageGetXMLDesc(str(path), 0)
            xml = preallocated_for_restore(saved)  # shared RAM: domain.py says why
            self.conn().restoreFlags(str(path), None if xml == saved else xml, flag)
        except libvirt.libvirtError as exc:
            raise PymachineError(
                f"libvirt could not restore {spec.domain_name}: {exc.get_error_message()}"
            ) from exc

    def detach_share(self, machine: str, dev: ShareDevice) -> None:
        dom = self._share_device(machine, dev, attach=False)
        # the guest acknowledges the PCIe unplug asynchronously; a save before that still sees the device
        deadline = time.monotonic() + 20
        while f"<target dir='{dev.tag}'/>" in dom.XMLDesc(0):
            if time.monotonic() > deadline:
                raise PymachineError(f"the guest did not release the device of share {dev.path}")
            time.sleep(0.05)

    def attach_share(self, machine: str, dev: ShareDevice) -> None:
        self._share_device(machine, dev, attach=True)

    def _share_device(self, machine: str, dev: ShareDevice, attach: bool):  # type: ignore[no-untyped-def]
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        if dom is None:
            raise PymachineError(f"machine '{machine}' is not running")
        change = dom.attachDeviceFlags if attach else dom.detachDeviceFlags
        try:
            change(filesystem_xml(dev), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            what = "plug in" if attach else "unplug"
            raise PymachineError(f"could not {what} share {dev.path}: {exc.get_error_message()}") from exc
        return dom

    def pause(self, machine: str) -> None:
        self._pause_op(machine, "suspend")

    def unpause(self, machine: str) -> None:
        self._pause_op(machine, "resume")

    def _pause_op(self, machine: str, op: str) -> None:
        """virDomainSuspend / virDomainResume, skipped when the domain is in that state already (libvirt
        refuses a second suspend/resume with "domain is not running" / "already paused" errors)."""
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        if dom is None:
            raise PymachineError(f"machine '{machine}' is not running")
        if self.paused(machine) == (op == "suspend"):
            return
        try:
            getattr(dom, op)()
        except libvirt.libvirtError as exc:
            if self.paused(machine) != (op == "suspend"):
                raise PymachineError(
                    f"libvirt could not {op} {dom.name()}: {exc.get_error_message()}"
                ) from exc

    def paused(self, machine: str) -> bool:
        libvirt = self._libvirt()
        dom = self._lookup(machine)
        try:
            return dom is not None and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        except libvirt.libvirtError:
            return False  # the transient domain vanished under us

    def monitor_command(self, machine: str, command: str) -> str:
        import libvirt_qemu

        dom = self._lookup(machine)
        if dom is None:
            raise PymachineError(f"machine '{machine}' is not running")
        try:
            return libvirt_qemu.qemuMonitorCommand(
                dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
            )
        except self._libvirt().libvirtError as exc:
            self._conn = None  # a restarted libvirtd: the long-lived host agent connects again next time
            raise PymachineError(f"QEMU monitor of {machine}: {exc.get_error_message()}") from exc


def _warn_kvm_permissions() -> None:
    """libvirt re-probes QEMU for ~48 s per start when its qemu user cannot open /dev/kvm (no udev rule)."""
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return
    if st.st_gid == 0 and not st.st_mode & stat.S_IRGRP:
        log.warning(
            "/dev/kvm is root-only: libvirt will re-probe QEMU for ~48 s on each start; fix with "
            "'chgrp kvm /dev/kvm; chmod 0660 /dev/kvm' (packaging/services.sh libvirtd does it)"
        )
