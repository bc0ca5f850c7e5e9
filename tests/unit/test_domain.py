"""Domain XML and the direct-QEMU command line: pure functions, compared with golden files.

Regenerate after an intended change: PYMACHINE_UPDATE_GOLDEN=1 pytest tests/unit/test_domain.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from pymachine.hostvm.domain import OWNER_NS, QEMU_NS, VMSpec, domain_xml
from pymachine.hostvm.drivers.qemu import qemu_argv

GOLDEN = Path(__file__).parent / "golden"
SPEC = VMSpec(
    name="dev",
    cpus=2,
    memory_mib=1024,
    kernel="/cache/img/vmlinuz",
    initrd="/cache/img/initrd.img",
    cmdline="console=ttyS0 root=/dev/vda rw init=/sbin/pymachine-init",
    disk="/home/u/m/dev/disk.qcow2",
    seed="/home/u/m/dev/seed.tar",
    console_log="/home/u/m/dev/console.log",
    ssh_port=40022,
    accel="tcg",
    uid=1000,
    gid=1000,
    owner="/home/u/m/dev",
)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYMACHINE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, regenerate (see module docstring)"


@pytest.mark.parametrize(
    ("golden", "spec"),
    [
        ("domain-tcg.xml", SPEC),
        ("domain-kvm.xml", replace(SPEC, accel="kvm", uid=None, gid=None, cpus=1, memory_mib=512, owner="")),
    ],
)
def test_domain_xml_golden(golden: str, spec: VMSpec) -> None:
    check_golden(golden, domain_xml(spec))


def test_domain_xml_structure() -> None:
    root = ET.fromstring(domain_xml(SPEC))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "pymachine-dev"
    assert root.findtext("os/kernel") == SPEC.kernel
    assert root.findtext("os/cmdline") == SPEC.cmdline
    assert root.find("features/tcg/tb-cache").text == "64"
    disks = root.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [SPEC.disk, SPEC.seed]
    assert disks[1].find("readonly") is not None and disks[1].find("driver").get("type") == "raw"
    assert root.find("devices/serial/log").get("file") == SPEC.console_log
    args = [a.get("value") for a in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22" in args
    assert root.find("seclabel/label").text == "+1000:+1000"
    assert root.find(f"metadata/{{{OWNER_NS}}}owner").get("dir") == "/home/u/m/dev"


def test_domain_xml_escapes_paths() -> None:
    spec = replace(SPEC, kernel="/a&b/<k>", cmdline="x='1' & y")
    root = ET.fromstring(domain_xml(spec))
    assert root.findtext("os/kernel") == "/a&b/<k>"
    assert root.findtext("os/cmdline") == "x='1' & y"


def test_kvm_has_no_tcg_cache() -> None:
    root = ET.fromstring(domain_xml(replace(SPEC, accel="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("features/tcg") is None
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_qemu_argv_golden() -> None:
    argv = qemu_argv(SPEC, "/home/u/m/dev/qemu.pid", "/home/u/m/dev/qmp.sock")
    check_golden("qemu-tcg.argv", "\n".join(argv) + "\n")
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi,tb-size=64"


def test_a_restore_waits_for_its_state_on_qmp() -> None:
    argv = qemu_argv(SPEC, "/p", "/q", incoming=True)
    assert argv[-2:] == ["-incoming", "defer"]
    assert argv[:-2] == qemu_argv(SPEC, "/p", "/q")  # otherwise the machine the state was saved from


def test_the_engine_port_is_one_named_virtserialport_listening_in_the_machine_folder() -> None:
    """Both drivers: the host end a unix socket QEMU (or libvirt for it) listens on, never a TCP port."""
    spec = replace(SPEC, engine_port="/home/u/m/dev/engine.port")
    check_golden("domain-engine-port.xml", domain_xml(spec))
    channel = ET.fromstring(domain_xml(spec)).find("devices/channel")
    assert channel is not None and channel.get("type") == "unix"
    assert channel.find("source").get("mode") == "bind"  # type: ignore[union-attr]
    assert channel.find("source").get("path") == "/home/u/m/dev/engine.port"  # type: ignore[union-attr]
    assert channel.find("target").get("name") == "org.pymachine.engine"  # type: ignore[union-attr]
    assert ET.fromstring(domain_xml(SPEC)).find("devices/channel") is None  # none unless asked
    argv = qemu_argv(spec, "/p", "/q")
    at = argv.index("socket,id=pmengine,path=/home/u/m/dev/engine.port,server=on,wait=off")
    assert argv[at - 1] == "-chardev"
    assert "virtserialport,bus=pmserial0.0,chardev=pmengine,name=org.pymachine.engine" in argv
    assert "virtio-serial-pci,id=pmserial0" in argv
    assert not any("pmengine" in a for a in qemu_argv(SPEC, "/p", "/q"))


def test_qemu_argv_doubles_commas_in_paths() -> None:
    argv = qemu_argv(replace(SPEC, disk="/a,b/disk.qcow2"), "/p", "/q")
    assert "file=/a,,b/disk.qcow2,if=virtio,format=qcow2,discard=unmap" in argv


def test_direct_qemu_started_by_root_drops_to_its_user() -> None:
    argv = qemu_argv(replace(SPEC, runas="pymachine-qemu"), "/p", "/q")
    assert argv[-2:] == ["-runas", "pymachine-qemu"]
    assert "-runas" not in qemu_argv(SPEC, "/p", "/q")  # a non-root user's QEMU already runs as them


def test_libvirt_labels_the_domain_but_not_the_disks() -> None:
    root = ET.fromstring(domain_xml(replace(SPEC, uid=990, gid=991)))
    label = root.find("seclabel")
    assert (label.get("type"), label.get("relabel")) == ("static", "yes")
    assert label.find("label").text == "+990:+991"
    for disk in root.findall("devices/disk/source"):
        assert disk.find("seclabel").get("relabel") == "no"  # the user's files keep their owner
    no_label = ET.fromstring(domain_xml(replace(SPEC, uid=None, gid=None)))
    assert no_label.find("seclabel") is None and no_label.find("devices/disk/source/seclabel") is None
