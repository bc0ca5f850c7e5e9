"""Machines on a remote libvirt (`create --connect qemu+ssh://USER@HOST/system`): a VM on another host.

No shared storage: the guest's kernel, initrd and base disk go into a storage pool on that host through
libvirt's own volume upload (virStorageVol.upload over a virStream, on libvirt's SSH connection), once per
image recipe; each machine gets a qcow2 overlay volume on top, and its seed is uploaded at each start. The
VM's SSH port is QEMU's hostfwd on *that host's* loopback, so every SSH connection to the guest (start's
checks, the host agent, poweroff) rides a direct-tcpip channel through an SSH link to the host, whose key is
pinned at create like a guest's (trust on first use, shown).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from . import paths
from .domain import VMSpec, xml_text
from .errors import PymachineError
from .progress import Progress

if TYPE_CHECKING:
    # paramiko (0.1 s) is imported where a link to the remote host is made: machines.py, and so `list`, loads
    # this module for every machine, local ones too
    import paramiko

POOL = "pymachine"
POOL_DIR = "/var/lib/pymachine-pool"  # on the remote host
CHUNK = 256 * 1024  # libvirt's stream message size: 4x faster than sendAll's callback here


@dataclass(frozen=True)
class Hop:
    """The SSH login libvirt's URI names: the same one carries our tunnel to the VM's port."""

    user: str
    host: str
    port: int
    key: Path


def is_remote(uri: str | None) -> bool:
    return bool(uri and urlparse(uri).hostname)


def hop(uri: str) -> Hop:
    url = urlparse(uri)
    keyfile = (parse_qs(url.query).get("keyfile") or [""])[0]
    key = Path(keyfile).expanduser() if keyfile else _default_key()
    return Hop(url.username or _login_name(), str(url.hostname), url.port or 22, key)


def _login_name() -> str:
    import getpass

    return getpass.getuser()


def _default_key() -> Path:
    from .remote_host import default_key

    return default_key("name one in the URI: qemu+ssh://root@HOST/system?keyfile=/path/to/key")


def host_alias(name: str) -> str:
    return f"pymachine-{name}-host"


# -- the pinned link to the host --------------------------------------------------------------------------
def pin_host(name: str, uri: str, say: Progress) -> None:
    """Trust the host's key on first use (shown), pinned beside the guest's in the machine's known_hosts."""
    from .remote_host import Target, _check_host_key, _server_key

    h = hop(uri)
    offered = _server_key(Target(h.user, h.host, h.port))
    _check_host_key(offered, None, Target(h.user, h.host, h.port), say)
    with open(paths.machine(name).known_hosts, "a") as fh:
        fh.write(f"{host_alias(name)} {offered.get_name()} {offered.get_base64()}\n")


def _pinned(name: str) -> paramiko.PKey:
    import base64

    import paramiko

    for line in paths.machine(name).known_hosts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == host_alias(name):
            return paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
    raise PymachineError(f"machine '{name}' has no pinned key for its libvirt host")


_links: dict[str, paramiko.Transport] = {}
_links_lock = threading.Lock()


def _link(name: str, uri: str) -> paramiko.Transport:
    """One authenticated link to the host per machine and process, re-made when it died."""
    import paramiko

    from .hostagent.transport import open_transport

    with _links_lock:
        t = _links.get(name)
        if t is not None and t.is_active():
            return t
        h = hop(uri)
        t = open_transport(h.host, h.port, h.user, paramiko.PKey.from_path(h.key), _pinned(name), timeout=20)
        t.set_keepalive(15)
        _links[name] = t
        return t


def channel(name: str, uri: str, port: int, timeout: float = 20.0) -> paramiko.Channel:
    """A socket-like channel to the VM's forwarded SSH port on the host's loopback."""
    return _link(name, uri).open_channel(
        "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout
    )


def proxy_command(name: str) -> str | None:
    """OpenSSH's ProxyCommand for `pymachine ssh` and ssh-config: the same hop, the host's key pinned too."""
    uri = machine_uri(name)
    if not uri:
        return None
    import shlex

    h, mp = hop(uri), paths.machine(name)
    return shlex.join(
        ["ssh", "-F", "/dev/null", "-i", str(h.key), "-p", str(h.port), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={mp.known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
         "-o", f"HostKeyAlias={host_alias(name)}", "-W", "127.0.0.1:%p",
         f"{h.user}@{h.host}"]
    )  # fmt: skip


def machine_uri(name: str) -> str | None:
    """The remote libvirt URI of machine `name`, None for anything else."""
    from . import store

    cfg = store.read_json(paths.machine(name).config, None) or {}
    uri = cfg.get("connect")
    return uri if cfg.get("driver") == "libvirt" and is_remote(uri) else None


# -- volumes ------------------------------------------------------------------------------------------------
def pool(conn: Any) -> Any:
    """Our directory pool on the host, defined (autostarted) on first use."""
    import libvirt

    try:
        p = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        xml = f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}</path></target></pool>"
        p = conn.storagePoolDefineXML(xml, 0)
        p.build(0)
        p.setAutostart(1)
    if not p.isActive():
        p.create(0)
    p.refresh(0)
    return p


def _volume(p: Any, name: str) -> Any | None:
    import libvirt

    try:
        return p.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def upload(conn: Any, p: Any, name: str, source: str, fmt: str, say: Progress, replace_old: bool) -> str:
    """`source` as volume `name` (its path on the host); kept when present unless `replace_old`."""
    vol = _volume(p, name)
    if vol is not None and replace_old:
        vol.delete(0)
        vol = None
    if vol is None:
        size = os.path.getsize(source)
        say(f"uploading {os.path.basename(source)} to the host's pool ({size // (1 << 20)} MiB)")
        xml = (
            f"<volume><name>{xml_text(name)}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>"
        )
        vol = p.createXML(xml, 0)
        try:
            stream = conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            with open(source, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    sent = 0
                    while sent < len(chunk):  # (send may take part of it)
                        sent += stream.send(chunk[sent:])
            stream.finish()
        except BaseException:
            vol.delete(0)  # never leave a half-written base for the next machine
            raise
    return str(vol.path())


def prepare(conn: Any, spec: VMSpec, recipe_hash: str, say: Progress) -> VMSpec:
    """Upload what `spec` names on this computer into the host's pool; the spec with the host's paths."""
    p = pool(conn)
    tag = (recipe_hash or hashlib.sha256(spec.disk.encode()).hexdigest())[:16]
    kernel = upload(conn, p, f"kernel-{tag}", spec.kernel, "raw", say, False)
    initrd = upload(conn, p, f"initrd-{tag}", spec.initrd, "raw", say, False)
    from . import store

    base_src = (store.read_json(paths.machine(spec.name).config, {}) or {}).get("image", {}).get("disk", "")
    base = upload(conn, p, f"base-{tag}.qcow2", base_src, "qcow2", say, False)
    disk_name = f"{spec.name}.qcow2"
    disk = _volume(p, disk_name)
    if disk is None:
        capacity = _virtual_size(spec.disk)
        xml = (
            f"<volume><name>{disk_name}</name><capacity unit='bytes'>{capacity}</capacity>"
            "<target><format type='qcow2'/></target>"
            f"<backingStore><path>{xml_text(base)}</path><format type='qcow2'/></backingStore></volume>"
        )
        disk = p.createXML(xml, 0)
    elif disk.info()[1] < (grown := _virtual_size(spec.disk)):  # `pymachine set --disk` grew the overlay
        disk.resize(grown, 0)  # virStorageVolResize: qemu-img resize on the host's side
    seed = upload(conn, p, f"{spec.name}-seed.tar", spec.seed, "raw", say, True)
    console = f"/var/log/libvirt/qemu/pymachine-{spec.name}-console.log"
    return replace(
        spec,
        kernel=kernel,
        initrd=initrd,
        disk=str(disk.path()),
        seed=seed,
        console_log=console,
        uid=None,
        gid=None,
    )


def delete_volumes(conn: Any, machine: str) -> None:
    """The machine's own volumes (overlay, seed); the shared kernel/initrd/base stay for other machines."""
    try:
        p = pool(conn)
    except Exception:  # noqa: BLE001 - no pool: nothing of ours there
        return
    for name in (f"{machine}.qcow2", f"{machine}-seed.tar"):
        vol = _volume(p, name)
        if vol is not None:
            vol.delete(0)


def _virtual_size(qcow2: str) -> int:
    import json

    from . import proc

    out = proc.run(["qemu-img", "info", "--output=json", qcow2]).stdout
    return int(json.loads(out)["virtual-size"])
