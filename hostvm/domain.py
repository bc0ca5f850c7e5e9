"""What a machine's VM looks like, as data (`VMSpec`) and as a libvirt domain XML — a pure function.

Networking goes through `<qemu:commandline>` because libvirt 9.0 (Debian 12) rejects the passt backend that
`<interface type='user'>` would need for port forwarding; libvirt marks such domains "tainted: custom-argv".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pymachine_agent import protocol
from pymachine_agent.serialmux import PORT_NAME

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# Our metadata element: which machine folder a domain belongs to. Domain names are global per libvirt daemon,
# so two PYMACHINE_HOMEs (users' tests, a second install) could both have a machine "default".
OWNER_NS = "https://pymachine.invalid/xmlns/owner/1"
TB_CACHE_MIB = 64  # TCG's default 1 GiB translation cache is most of an idle guest's RSS; 64 costs no speed


@dataclass(frozen=True)
class ShareDevice:
    """One share as the VM gets it: the device tag the guest mounts, and how it is served."""

    tag: str  # virtiofs / 9p mount tag: pm0, pm1, ...
    path: str
    readonly: bool
    transport: str  # virtiofs | 9p | sshfs
    socket: str = ""  # virtiofs: virtiofsd's vhost-user socket

    def guest(self) -> dict[str, object]:
        """The entry the guest gets (agent.json `shares`; pminit also reads the tag)."""
        return {"path": self.path, "readonly": self.readonly, "transport": self.transport, "tag": self.tag}

    @property
    def on_device(self) -> bool:
        """A VM device the guest mounts (virtiofs, 9p): what a save unmounts and a resume mounts again."""
        return self.transport in protocol.DEVICE_TRANSPORTS


@dataclass(frozen=True)
class VMSpec:
    """Everything a driver needs to start one machine; built by the façade from config + image + state."""

    name: str  # the machine's name; the domain is called `pymachine-<name>`
    cpus: int
    memory_mib: int
    kernel: str
    initrd: str
    cmdline: str
    disk: str  # the per-machine qcow2 overlay
    seed: str  # raw tar, attached read-only as the second virtio disk (/dev/vdb)
    console_log: str
    ssh_port: int  # on 127.0.0.1, forwarded to the guest's port 22
    accel: str = "tcg"  # kvm | hvf | whpx | tcg (libvirt domain type kvm | hvf | qemu)
    machine: str = "q35"
    uid: int | None = None  # run QEMU as this uid:gid (system libvirt); None leaves libvirt's default
    gid: int | None = None
    owner: str = ""  # the machine folder, recorded in the domain's metadata
    runas: str = ""  # direct QEMU started as root: drop to this user (qemu_user.py); libvirt uses uid/gid
    shares: tuple[ShareDevice, ...] = ()  # host folders (virtiofs and 9p ones become devices)
    # A cluster node's second NIC: QEMU's multicast socket netdev on the host's loopback (GROUP:PORT), which
    # only the cluster's own VMs join (hostvm/cluster.py); "" for a plain machine.
    private_mcast: str = ""
    private_mac: str = ""
    # The engine socket's serial path (hostagent/serialpath.py): the host end of the virtserialport
    # `org.pymachine.engine`, a unix socket QEMU listens on in the machine folder; "" for none.
    engine_port: str = ""

    @property
    def shared_memory(self) -> bool:
        """vhost-user (virtiofsd) maps guest RAM: it must be memfd, shared."""
        return any(s.transport == "virtiofs" for s in self.shares)

    @property
    def domain_name(self) -> str:
        return domain_name(self.name)

    def netdev(self) -> str:
        # restrict=on: the guest reaches nothing but the forwarded port (the network rule of this project).
        return f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"

    def nic(self) -> str:
        # A fixed slot far above the ones libvirt hands out (from 0x1 up), or QEMU may place the NIC on a slot
        # libvirt then wants for a root port.
        bus = "pcie.0" if self.machine == "q35" else "pci.0"
        return f"virtio-net-pci,netdev=net0,bus={bus},addr=0x10"

    def private_net_args(self) -> list[str]:
        """-netdev/-device for the cluster NIC (eth1 in the guest). localaddr=127.0.0.1 with QEMU's multicast
        TTL of 1 keeps the frames on the host's loopback: nothing leaves this machine."""
        if not self.private_mcast:
            return []
        bus = "pcie.0" if self.machine == "q35" else "pci.0"
        return [
            "-netdev", f"socket,id=net1,mcast={self.private_mcast},localaddr=127.0.0.1",
            "-device", f"virtio-net-pci,netdev=net1,mac={self.private_mac},bus={bus},addr=0x11",
        ]  # fmt: skip


def domain_name(machine: str) -> str:
    return f"pymachine-{machine}"


def domain_xml(spec: VMSpec) -> str:
    """The libvirt domain XML for `spec`. Deterministic: same spec, same bytes (golden-file tested)."""
    kvm = spec.accel in ("kvm", "hvf")  # hardware: host CPU model, no TCG translation cache
    a = _attr
    lines = [
        f"<domain type={a(spec.accel if kvm else 'qemu')} xmlns:qemu={a(QEMU_NS)}>",
        f"  <name>{xml_text(spec.domain_name)}</name>",
        *(
            [f"  <metadata><pm:owner xmlns:pm={a(OWNER_NS)} dir={a(spec.owner)}/></metadata>"]
            if spec.owner
            else []
        ),
        f"  <memory unit='MiB'>{spec.memory_mib}</memory>",
        *(
            [
                "  <memoryBacking>",
                "    <source type='memfd'/>",
                "    <access mode='shared'/>",
                "  </memoryBacking>",
            ]
            if spec.shared_memory
            else []
        ),
        f"  <vcpu>{spec.cpus}</vcpu>",
        "  <os>",
        f"    <type arch='x86_64' machine={a(spec.machine)}>hvm</type>",
        f"    <kernel>{xml_text(spec.kernel)}</kernel>",
        f"    <initrd>{xml_text(spec.initrd)}</initrd>",
        f"    <cmdline>{xml_text(spec.cmdline)}</cmdline>",
        "  </os>",
        "  <features>",
        "    <acpi/>",
    ]
    if not kvm:
        lines += ["    <tcg>", f"      <tb-cache unit='MiB'>{TB_CACHE_MIB}</tb-cache>", "    </tcg>"]
    lines += [
        "  </features>",
        "  <cpu mode='host-passthrough'/>" if kvm else "  <cpu mode='maximum'/>",
        "  <clock offset='utc'/>",
        "  <on_poweroff>destroy</on_poweroff>",
        "  <on_reboot>restart</on_reboot>",
        "  <on_crash>destroy</on_crash>",
        "  <devices>",
        "    <disk type='file' device='disk'>",
        "      <driver name='qemu' type='qcow2' discard='unmap'/>",
        *_source(spec, spec.disk),
        "      <target dev='vda' bus='virtio'/>",
        "    </disk>",
        "    <disk type='file' device='disk'>",
        "      <driver name='qemu' type='raw'/>",
        *_source(spec, spec.seed),
        "      <target dev='vdb' bus='virtio'/>",
        "      <readonly/>",
        "    </disk>",
        # A pty whose output virtlogd copies to the log file: with <serial type='file'> libvirt 9.0 hands QEMU
        # an fd set that QEMU did not keep open (an empty console.log after a restart).
        "    <serial type='pty'>",
        f"      <log file={a(spec.console_log)} append='off'/>",
        "      <target port='0'/>",
        "    </serial>",
        "    <console type='pty'>",
        "      <target type='serial' port='0'/>",
        "    </console>",
        "    <controller type='usb' model='none'/>",
        # free page reporting: memory the guest frees (a container exits) goes back to the host; autodeflate
        # (deflate-on-oom): while the host agent's give-back holds the balloon inflated (memback.py), a guest
        # running short takes pages back from it instead of OOM-killing a container
        "    <memballoon model='virtio' autodeflate='on' freePageReporting='on'/>",
        "    <rng model='virtio'>",
        "      <backend model='random'>/dev/urandom</backend>",
        "    </rng>",
        *_filesystems(spec),
        *_engine_channel(spec),
        "  </devices>",
    ]
    if spec.uid is not None and spec.gid is not None:
        # QEMU runs as the owner of the machine folder (or, for a root-owned one, as libvirt's QEMU user,
        # given ACL access to exactly its files: qemu_user.py). relabel='yes' so that libvirt hands that user
        # its per-domain files (master-key.aes, the monitor socket; with 'no' QEMU cannot read them), and the
        # kernel and initrd for the run (restored afterwards); the disks say relabel='no': their owner stays.
        lines += [
            "  <seclabel type='static' model='dac' relabel='yes'>",
            f"    <label>+{spec.uid}:+{spec.gid}</label>",
            "  </seclabel>",
        ]
    lines += [
        "  <qemu:commandline>",
        "    <qemu:arg value='-netdev'/>",
        f"    <qemu:arg value={a(spec.netdev())}/>",
        "    <qemu:arg value='-device'/>",
        f"    <qemu:arg value={a(spec.nic())}/>",
        *(f"    <qemu:arg value={a(arg)}/>" for arg in spec.private_net_args()),
        "  </qemu:commandline>",
        "</domain>",
        "",
    ]
    return "\n".join(lines)


# A restore into shared RAM (a machine with virtiofs): QEMU 7.2 checks every zero page of the stream by
# reading it, and a read of a hole in a shared memfd allocates a page (private memory would map the zero
# page), so the load faulted in all of the RAM 4 KiB at a time (288k faults for 1 GiB, ~0.7 s here).
# Preallocating it first (QEMU's prealloc: MADV_POPULATE_WRITE, one call, no fault per page) ends in the same
# memory (all of it, until the host agent gives the free part back: hostagent/memback.py) in less time:
# `virsh restore` of a 1 GiB machine 1.13-1.38 s -> 0.86-0.98 s. Only a restore gets it: a cold boot's memfd
# holds only what the guest touches. (libvirt only: the direct-QEMU driver saves no VM with virtiofs.)
_SHARED_ACCESS = "<access mode='shared'/>"
RESTORE_ALLOCATION = "<allocation mode='immediate'/>"


def preallocated_for_restore(xml: str) -> str:
    """The saved domain XML with its shared RAM preallocated (see above); unchanged without shared RAM or
    when it says how to allocate already."""
    if _SHARED_ACCESS not in xml or "<allocation " in xml:
        return xml
    indent = re.search(r"\n([ \t]*)" + re.escape(_SHARED_ACCESS), xml)
    pad = indent.group(1) if indent else ""
    return xml.replace(_SHARED_ACCESS, f"{_SHARED_ACCESS}\n{pad}{RESTORE_ALLOCATION}", 1)


def filesystem_xml(dev: ShareDevice) -> str:
    """One share's <filesystem> element alone, for hot-plugging it (around a saved state)."""
    from types import SimpleNamespace

    return "\n".join(line.strip() for line in _filesystems(SimpleNamespace(shares=(dev,))))  # type: ignore[arg-type]


def _filesystems(spec: VMSpec) -> list[str]:
    """virtiofs through pymachine's own virtiofsd (libvirt >= 8.5: <source socket>, so libvirt neither starts
    nor relabels it); 9p served by QEMU with mapped-xattr ownership, read-only where the share is."""
    a = _attr
    out: list[str] = []
    for s in spec.shares:
        if s.transport == "virtiofs":
            out += [
                "    <filesystem type='mount'>",
                "      <driver type='virtiofs' queue='1024'/>",
                f"      <source socket={a(s.socket)}/>",
                f"      <target dir={a(s.tag)}/>",
                "    </filesystem>",
            ]
        elif s.transport == "9p":
            out += [
                "    <filesystem type='mount' accessmode='mapped'>",
                f"      <source dir={a(s.path)}/>",
                f"      <target dir={a(s.tag)}/>",
                *(["      <readonly/>"] if s.readonly else []),
                "    </filesystem>",
            ]
    return out


ENGINE_PORT_NAME = PORT_NAME  # the guest finds the port by this name (no udev there)


def _engine_channel(spec: VMSpec) -> list[str]:
    """libvirt adds the virtio-serial controller a channel needs; it creates the listening socket itself."""
    if not spec.engine_port:
        return []
    return [
        "    <channel type='unix'>",
        f"      <source mode='bind' path={_attr(spec.engine_port)}/>",
        f"      <target type='virtio' name='{ENGINE_PORT_NAME}'/>",
        "    </channel>",
    ]


def engine_port_args(spec: VMSpec) -> list[str]:
    """The same port for the direct-QEMU driver: QEMU listens (server=on) without waiting for a client."""
    if not spec.engine_port:
        return []
    path = spec.engine_port.replace(",", ",,")
    return [
        "-device", "virtio-serial-pci,id=pmserial0",
        "-chardev", f"socket,id=pmengine,path={path},server=on,wait=off",
        "-device", f"virtserialport,bus=pmserial0.0,chardev=pmengine,name={ENGINE_PORT_NAME}",
    ]  # fmt: skip


def _source(spec: VMSpec, path: str) -> list[str]:
    if spec.uid is None or spec.gid is None:
        return [f"      <source file={_attr(path)}/>"]
    return [
        f"      <source file={_attr(path)}>",
        "        <seclabel model='dac' relabel='no'/>",
        "      </source>",
    ]


def xml_text(value: str) -> str:
    """Text escaped for an XML element (xml.sax.saxutils.escape, without that module's imports)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    """A quoted XML attribute value."""
    # imported here: xml.sax.saxutils loads urllib.request (12 ms), which `pymachine list` would pay
    from xml.sax.saxutils import quoteattr

    return quoteattr(value)
