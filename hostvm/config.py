"""Machine settings: parse what a person typed, fill in defaults, validate, and report every problem at once.

Pure apart from `host_cpus()` / `default_driver()`, which callers pass in so that tests can pin them, and
`settings_defaults()`, which reads the user's defaults for new machines from `paths.settings_file()`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from . import paths, share_nesting, store
from .errors import UsageError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
KNOWN_DRIVERS = ("libvirt", "qemu")
KiB, MiB, GiB = 1024, 1024**2, 1024**3
MIN_MEMORY = 256 * MiB
DEFAULT_MEMORY = 1 * GiB
DEFAULT_DISK = 8 * GiB
DEFAULT_NAME = "default"
DEFAULT_IDLE_SUSPEND = 5.0  # minutes without containers or clients before the resource saver pauses; 0 = off
_UNITS = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}
SHARE_TRANSPORTS = ("auto", "virtiofs", "9p", "sshfs")
# Host folders that may never be shared: each is mounted at the same path in the VM, so sharing one of these
# would hide the guest's own system (and hand the host's to containers). The folder and everything inside.
SYSTEM_FOLDERS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var/lib", "/var/log", "/var/run", "/var/cache", "/var/spool",
)  # fmt: skip
# Parents of user folders: the folder itself is refused (it holds everyone's files), folders inside are fine.
SYSTEM_PARENTS = ("/", "/home", "/var", "/mnt", "/media", "/opt", "/srv", "/Users")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """`2G`, `512M`, `1k`, `1.5GiB`, `1073741824` → bytes (binary units). Raises ValueError."""
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"'{text}' is not a size (use e.g. 512M, 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(n: int) -> str:
    """Bytes → the shortest exact binary form (`1G`, `512M`), falling back to whole bytes."""
    for suffix, unit in (("T", 1024 * GiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def host_cpus() -> int:
    return os.cpu_count() or 1


def default_driver() -> str:
    """libvirt where libvirt-python is installed, the direct-QEMU driver otherwise (Windows, bare hosts)."""
    return "libvirt" if importlib.util.find_spec("libvirt") is not None else "qemu"


SETTINGS_FIELDS = ("cpus", "memory", "disk")


def settings_defaults() -> dict[str, str]:
    """The defaults for new machines that the GUI's Settings panel saved, as
    `{"defaults": {"cpus": "2", "memory": "1G", "disk": "8G"}}` in settings.json: only set fields, as text.
    Validation is `build()`'s job, so a bad value is reported like a bad flag."""
    path = paths.settings_file()
    try:
        data = store.read_json(path, {}) or {}
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the settings file {path}: {exc}", hint="fix it in the app's Settings, or delete it"
        ) from None
    defaults = data.get("defaults") if isinstance(data, dict) else None
    if not isinstance(defaults, dict):
        return {}
    return {k: str(defaults[k]) for k in SETTINGS_FIELDS if defaults.get(k) not in (None, "")}


def with_settings(
    cpus: int | str | None, memory: int | str | None, disk: int | str | None
) -> tuple[dict[str, int | str | None], dict[str, str]]:
    """Explicit values win; unset ones come from `settings_defaults()`. Returns (values, the ones taken)."""
    given: dict[str, int | str | None] = {"cpus": cpus, "memory": memory, "disk": disk}
    taken = {k: v for k, v in settings_defaults().items() if given[k] is None}
    return {**given, **taken}, taken


@dataclass(frozen=True)
class Share:
    """A host folder the VM sees at the same absolute path (config.json: {"path": ..., "readonly": ...,
    "sync": ...}; a config.json from before sync shares has no `sync`: a live share)."""

    path: str  # absolute, normalised host path; the same path inside the VM
    readonly: bool = False
    # a copy on the VM's disk kept in sync both ways (hostvm/hostagent/syncshare.py), not a live transport
    sync: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Share:
        return cls(str(data["path"]), bool(data.get("readonly", False)), bool(data.get("sync", False)))

    def __str__(self) -> str:
        return self.path + (":ro" if self.readonly else ":sync" if self.sync else "")


def shares_in(config_file: os.PathLike[str] | str) -> list[Share]:
    """The shares a machine's config.json lists, read without the rest of the config (the host agent and
    share hot-plug need only these); [] when the file is missing or unreadable, entries without a path left
    out."""
    try:
        raw = (store.read_json(config_file, {}) or {}).get("shares") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [Share.from_json(s) for s in raw if isinstance(s, dict) and isinstance(s.get("path"), str)]


# Root's home is the guest's own root home too: laid over it, every SSH session of the guest runs the host's
# root dotfiles (Debian's bash sources ~/.bashrc for sshd sessions). On the development machine that ran the
# host's pyenv inside the guest, whose rehash lock left in the shared /root/.pyenv hung every later session,
# the guest's and the host's. So pymachine run by root shares it only when asked (`mount add NAME /root`).
NOT_SHARED_BY_DEFAULT = ("/root",)


def default_shares() -> list[Share]:
    """The user's home folder and the system temp folder, read-write (as Docker Desktop and Colima share);
    root's home only when asked."""
    home = os.path.normpath(os.path.expanduser("~"))
    candidates = ([] if home in NOT_SHARED_BY_DEFAULT else [home]) + [tempfile.gettempdir()]
    found = [os.path.normpath(p) for p in candidates if p]
    found = [p for p in found if os.path.isdir(p) and _system_folder(p) is None]
    # a home inside the temp folder (a test's HOME) is shared by the temp folder already
    inside = share_nesting.within
    return [Share(p) for p in dict.fromkeys(found) if not any(o != p and inside(p, o) for o in found)]


def parse_share(text: str | Share) -> Share:
    """`PATH`, `PATH:ro`, `PATH:rw` or `PATH:sync` → a Share (the path as typed; `check_shares` validates
    it)."""
    if isinstance(text, Share):
        return text
    if text.endswith(":sync"):
        return Share(text[: -len(":sync")], sync=True)
    for suffix, readonly in ((":ro", True), (":rw", False)):
        if text.endswith(suffix):
            return Share(text[: -len(suffix)], readonly)
    return Share(text)


def check_shares(shares: list[Share], problems: list[Problem], label: str = "shares") -> list[Share]:
    """Normalise each path; add a Problem (field `label`) for a relative path, a path that is not an existing
    folder, a system folder, or a folder equal to or inside another share (except a sync share inside a
    read-write live one: share_nesting.clash). Returns the normalised shares."""
    out: list[Share] = []
    for share in shares:
        path = share.path
        if not os.path.isabs(path):
            problems.append(Problem(label, f"'{path}' is not an absolute path (use e.g. $PWD/{path})"))
            continue
        norm = os.path.normpath(path)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        why = _system_folder(norm) or _system_folder(os.path.realpath(norm))
        if why:
            problems.append(Problem(label, f"'{norm}' {why}, share a folder of your own instead"))
            continue
        if not os.path.isdir(norm):
            problems.append(_not_a_folder(label, norm))
            continue
        if share.sync and share.readonly:
            problems.append(Problem(label, f"'{norm}': a sync share is read-write (drop :ro or sync)"))
            continue
        # only a sync share inside a read-write live share may nest (share_nesting.py says why)
        candidate = Share(norm, share.readonly, share.sync)
        why = next((w for o in out if (w := share_nesting.clash(candidate, o))), None)
        if why is not None:
            problems.append(Problem(label, why))
            continue
        out.append(Share(norm, share.readonly, share.sync))
    return out


def _not_a_folder(label: str, path: str) -> Problem:
    if os.path.lexists(path):
        parent = os.path.dirname(path)
        return Problem(
            label, f"'{path}' is not a folder", f"share a folder, e.g. the one holding it: {parent}"
        )
    return Problem(
        label,
        f"'{path}' does not exist on this host",
        f"create the folder first (mkdir -p {shlex.quote(path)}) or correct the path",
    )


def _system_folder(path: str) -> str | None:
    if path in SYSTEM_PARENTS:
        return "is a system folder that holds everyone's files" if path != "/" else "is the whole file system"
    hit = next((f for f in SYSTEM_FOLDERS if share_nesting.within(path, f)), None)
    return (
        f"is inside the system folder {hit}"
        if hit and hit != path
        else ("is a system folder" if hit else None)
    )


@dataclass
class MachineConfig:
    """What a machine is made of; written to `config.json` at create. Only `shares` changes afterwards
    (`pymachine mount add|rm`, effective at the next start)."""

    name: str
    cpus: int
    memory: int  # bytes
    disk: int  # bytes (virtual size of the overlay)
    driver: str
    connect: str | None = None  # libvirt URI; None picks qemu:///system as root, qemu:///session otherwise
    image: dict[str, Any] = field(default_factory=dict)  # kernel, initrd, disk, cmdline, recipe_hash
    # host folders seen at the same path in the VM; a config.json from before shares existed has none
    shares: list[Share] = field(default_factory=list)
    share_transport: str = "auto"  # auto | virtiofs | 9p | sshfs; auto = the first the driver can do
    idle_suspend: float = DEFAULT_IDLE_SUSPEND  # minutes (fractions allowed); 0 = the resource saver is off
    # A Swarm cluster node (hostvm/cluster.py): name, role, index, address, mcast, mac; its engine is dockerd
    cluster: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # `sync` only where set: a live share's entry keeps the shape older versions read
        data["shares"] = [{k: v for k, v in s.items() if k != "sync" or v} for s in data["shares"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["shares"] = [Share.from_json(s) for s in known.get("shares") or []]
        return cls(**known)


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    hint: str = ""  # what to do, when this problem knows better than its field's general hint

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def hint_for(problems: list[Problem], general: str) -> str:
    """The hint of an error listing `problems`: each problem's own hint, and `general` for those without."""
    hints = [p.hint for p in problems if p.hint]
    if len(hints) < len(problems):
        hints.append(general)
    return "; ".join(dict.fromkeys(hints))


def build(
    name: str | None = None,
    cpus: int | str | None = None,
    memory: int | str | None = None,
    disk: int | str | None = None,
    driver: str | None = None,
    connect: str | None = None,
    *,
    ncpus_host: int,
    fallback_driver: str,
    image_bytes: int = 0,
    mounts: list[str | Share] | None = None,
    home_mount: bool = True,
    share_transport: str | None = None,
    idle_suspend: float | str | None = None,
) -> MachineConfig:
    """Parse → defaults → validate. Raises UsageError listing every problem, each with its field."""
    problems: list[Problem] = []
    name = DEFAULT_NAME if name is None else name
    if not NAME_PATTERN.fullmatch(name):
        problems.append(
            Problem("name", f"'{name}' must be 1-31 characters of a-z, 0-9 and '-', not starting with '-'")
        )

    cpu_count = min(2, ncpus_host)
    if cpus is not None:
        try:
            cpu_count = int(cpus)
        except (TypeError, ValueError):
            problems.append(Problem("cpus", f"'{cpus}' is not a whole number"))
        else:
            if not 1 <= cpu_count <= ncpus_host:
                problems.append(
                    Problem("cpus", f"must be between 1 and {ncpus_host} (the host's cores), got {cpu_count}")
                )

    mem = _size_field("memory", memory, DEFAULT_MEMORY, problems)
    if mem is not None and mem < MIN_MEMORY:
        problems.append(Problem("memory", f"must be at least 256M, got {format_size(mem)}"))

    disk_default = max(DEFAULT_DISK, _round_up(image_bytes, MiB))
    size = _size_field("disk", disk, disk_default, problems)
    if size is not None and size < image_bytes:
        problems.append(
            Problem("disk", f"must be at least the image's size {format_size(_round_up(image_bytes, MiB))}")
        )

    drv = fallback_driver if driver is None else driver
    if drv not in KNOWN_DRIVERS:
        problems.append(Problem("driver", f"'{drv}' is not one of {', '.join(KNOWN_DRIVERS)}"))
    if connect is not None and drv != "libvirt":
        problems.append(Problem("connect", "a libvirt URI only applies to --driver libvirt"))

    wanted = (default_shares() if home_mount else []) + [parse_share(m) for m in mounts or []]
    shares = check_shares(wanted, problems)
    transport = share_transport or "auto"
    if transport not in SHARE_TRANSPORTS:
        problems.append(
            Problem("share_transport", f"'{transport}' is not one of {', '.join(SHARE_TRANSPORTS)}")
        )

    idle = DEFAULT_IDLE_SUSPEND
    if idle_suspend is not None:
        try:
            idle = float(idle_suspend)
        except (TypeError, ValueError):
            problems.append(Problem("idle_suspend", f"'{idle_suspend}' is not a number of minutes"))
        else:
            if not 0 <= idle <= 7 * 24 * 60 or idle != idle:
                problems.append(
                    Problem("idle_suspend", f"must be 0 (off) to 10080 minutes, got {idle_suspend}")
                )

    if problems:
        # one problem per line under the head when there are several: a person fixes them in turn
        listed = "".join(f"\n  {p}" for p in problems) if len(problems) > 1 else f" {problems[0]}"
        raise UsageError(
            "invalid machine settings:" + listed,
            hint=hint_for(
                problems, "fix the fields above; sizes take a unit (512M, 2G), names look like 'dev-1'"
            ),
            problems=[(p.field, p.message) for p in problems],
        )
    assert mem is not None and size is not None
    return MachineConfig(
        name=name,
        cpus=cpu_count,
        memory=mem,
        disk=size,
        driver=drv,
        connect=connect,
        shares=shares,
        share_transport=transport,
        idle_suspend=idle,
    )


def _size_field(label: str, value: int | str | None, default: int, problems: list[Problem]) -> int | None:
    if value is None:
        return default
    try:
        return parse_size(value)
    except ValueError as exc:
        problems.append(Problem(label, str(exc)))
        return None


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit
