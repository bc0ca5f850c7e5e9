"""Changing a machine after create: CPUs, memory, disk (grow only), shared folders; applied at the next start.

One operation for every front end (`pymachine set`, `pymachine mount add|rm`, the app's Settings dialog):
`plan()` validates a `SettingsRequest` against the machine's config and the host it runs on (pure, every
problem with its field); `apply()` writes config.json atomically under the machine's lock, grows the disk
image of a stopped machine, and hot-plugs sshfs shares where that is possible (share_hotplug.py).

When changes apply: a stopped machine takes them at its next start. Its saved state (savestate.py) was made
for the old config, so that start boots cold and says why ("cold boot: the machine's config changed ..."). A
running machine keeps what it started with: `start` records that in state.json (`settings`), `pending()`
compares, and `inspect`/`list` say "pending: cpus 2 → 4 (at next start)". A stop of such a machine shuts it
down instead of saving its state (savestate.save), so the next start boots with the new settings.

The disk: the overlay qcow2 grows with `qemu-img resize` (the same file under both drivers; a remote libvirt
pool's volume grows at the next start, remote_libvirt.prepare), and the guest init grows its ext4 online with
resize2fs at every boot (pminit.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from . import config as cfgmod
from . import paths, proc, share_hotplug, store
from .config import MachineConfig, MiB, Problem, Share, format_size, parse_share, parse_size
from .errors import PymachineError, UsageError
from .units import binary_size

SIZED = ("cpus", "memory", "disk")  # the settings a running VM cannot change: they wait for its next start


@dataclass(frozen=True)
class HostLimits:
    """What a machine on this host may have: its cores, and its memory (None: unknown, not checked)."""

    cpus: int
    memory: int | None
    where: str = "this host"


def local_limits() -> HostLimits:
    memory = None
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf: memory is not checked there
        pass
    return HostLimits(cfgmod.host_cpus(), memory)


def host_limits(cfg: MachineConfig, drv: Any = None) -> HostLimits:
    """The limits of the host the machine runs on: this computer, or a remote libvirt host's (its getInfo)."""
    from . import remote_libvirt

    if drv is not None and remote_libvirt.is_remote(cfg.connect):
        try:
            info = drv.conn().getInfo()  # [model, memory MiB, cpus, ...]
            return HostLimits(int(info[2]), int(info[1]) * MiB, "its host")
        except Exception:  # noqa: BLE001 - unreachable now: checked against this computer, the start will tell
            pass
    return local_limits()


@dataclass(frozen=True)
class SettingsRequest:
    """What a person asked to change; None / empty leaves a setting as it is."""

    cpus: int | str | None = None
    memory: int | str | None = None  # bytes, or a size with a unit: 4G, 512M
    disk: int | str | None = None  # grow only
    add_shares: tuple[str | Share, ...] = ()  # PATH, PATH:ro or a Share
    remove_shares: tuple[str, ...] = ()  # host paths; removing and adding one path changes its read-only flag
    share_field: str = "shares"  # the field share problems are reported under (`mount` for `mount add|rm`)


@dataclass(frozen=True)
class Change:
    field: str  # cpus | memory | disk | share
    old: str
    new: str

    def __str__(self) -> str:
        if self.field == "share":
            return f"shares {self.new}" if self.new else f"no longer shares {self.old}"
        return f"{self.field} {self.old} → {self.new}"


@dataclass(frozen=True)
class Plan:
    config: MachineConfig  # the config as it will be written
    changes: list[Change]
    added: list[Share]
    removed: list[Share]


def _show(key: str, value: int) -> str:
    return str(value) if key == "cpus" else format_size(value)


def plan(cfg: MachineConfig, request: SettingsRequest, limits: HostLimits) -> Plan:
    """Validate `request` against `cfg` and the host (pure); UsageError lists every (field, problem)."""
    problems: list[Problem] = []
    new: dict[str, int] = {"cpus": cfg.cpus, "memory": cfg.memory, "disk": cfg.disk}
    if request.cpus not in (None, ""):
        try:
            cpus = int(request.cpus)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.append(Problem("cpus", f"'{request.cpus}' is not a whole number"))
        else:
            if not 1 <= cpus <= limits.cpus:
                why = f"must be between 1 and {limits.cpus} ({limits.where}'s cores), got {cpus}"
                problems.append(Problem("cpus", why))
            new["cpus"] = cpus
    memory = _size(request.memory, "memory", problems)
    if memory is not None:
        if memory < cfgmod.MIN_MEMORY:
            problems.append(Problem("memory", f"must be at least 256M, got {format_size(memory)}"))
        elif limits.memory is not None and memory > limits.memory:
            most = binary_size(limits.memory)
            why = f"must be at most {most} ({limits.where}'s memory), got {format_size(memory)}"
            problems.append(Problem("memory", why))
        new["memory"] = memory
    disk = _size(request.disk, "disk", problems)
    if disk is not None:
        disk = -(-disk // MiB) * MiB  # qemu-img sizes are whole sectors: whole MiB keep it simple
        if disk < cfg.disk:
            problems.append(
                Problem(
                    "disk",
                    f"can only grow: it is {format_size(cfg.disk)} now, got {format_size(disk)} "
                    "(a smaller disk would cut its file system)",
                )
            )
        new["disk"] = disk
    kept, _gone = _removed(cfg, request.remove_shares, request.share_field, problems)
    wanted = [*kept, *(parse_share(s) for s in request.add_shares)]
    shares = cfgmod.check_shares(wanted, problems, request.share_field)
    if problems:
        raise UsageError(
            f"invalid settings for machine '{cfg.name}': " + "; ".join(str(p) for p in problems),
            hint=cfgmod.hint_for(
                problems,
                f"see the shares with: pymachine mount list {cfg.name}"
                if all(p.field == request.share_field for p in problems)
                else "fix the fields above; sizes take a unit (4G, 512M); the disk can only grow",
            ),
            problems=[(p.field, p.message) for p in problems],
        )
    added = [s for s in shares if s not in cfg.shares]
    removed = [s for s in cfg.shares if s not in shares]
    changes = [
        Change(k, _show(k, getattr(cfg, k)), _show(k, new[k])) for k in SIZED if new[k] != getattr(cfg, k)
    ]
    changes += [Change("share", str(s), "") for s in removed] + [Change("share", "", str(s)) for s in added]
    config = replace(cfg, cpus=new["cpus"], memory=new["memory"], disk=new["disk"], shares=shares)
    return Plan(config, changes, added, removed)


def _size(value: int | str | None, key: str, problems: list[Problem]) -> int | None:
    if value in (None, ""):
        return None
    try:
        return parse_size(value)  # type: ignore[arg-type]
    except ValueError as exc:
        problems.append(Problem(key, str(exc)))
        return None


def _removed(
    cfg: MachineConfig, paths_: tuple[str, ...], label: str, problems: list[Problem]
) -> tuple[list[Share], list[Share]]:
    kept, gone = list(cfg.shares), []
    for path in paths_:
        norm = os.path.normpath(parse_share(path).path) if os.path.isabs(path) else path
        hit = next((s for s in kept if s.path == norm), None)
        if hit is None:
            listed = ", ".join(s.path for s in cfg.shares) or "none"
            problems.append(
                Problem(label, f"'{path}' is not shared with machine '{cfg.name}' (shares: {listed})")
            )
            continue
        kept.remove(hit)
        gone.append(hit)
    return kept, gone


# -- what a running machine has not picked up yet ------------------------------------------------------------
def started_settings(cfg: MachineConfig | dict[str, Any]) -> dict[str, int]:
    """What `start` records in state.json: the sizes this boot of the VM has."""
    data = cfg if isinstance(cfg, dict) else cfg.to_json()
    return {k: int(data[k]) for k in SIZED if k in data}


def pending(config: MachineConfig | dict[str, Any], started: dict[str, Any]) -> list[Change]:
    """config.json against what the running VM started with (state.json's `settings`); [] when that is
    unknown (a machine started before this was recorded)."""
    before = started.get("settings") or {}
    now = started_settings(config)
    return [
        Change(k, _show(k, int(before[k])), _show(k, now[k]))
        for k in SIZED
        if k in before and before[k] != now[k]
    ]


def pending_summary(machine: Any) -> str:
    """'pending: cpus 2 → 4, shares /x (at next start)' for `list`, `inspect` and the app; '' when nothing."""
    parts = [f"{c['field']} {c['old']} → {c['new']}" for c in getattr(machine, "pending", None) or []]
    for s in getattr(machine, "shares", None) or []:
        if s.get("pending") == "add":
            parts.append(f"shares {s['path']}")
        elif s.get("pending") == "remove":
            parts.append(f"no longer shares {s['path']}")
    return f"pending: {', '.join(parts)} (at next start)" if parts else ""


# -- the disk ------------------------------------------------------------------------------------------------
def disk_size(image: os.PathLike[str] | str) -> int:
    out = proc.run(["qemu-img", "info", "--output=json", "-U", str(image)]).stdout
    return int(json.loads(out)["virtual-size"])


def grow_disk(image: os.PathLike[str] | str, size: int) -> bool:
    """Grow the qcow2 `image` to `size` bytes (never shrinks); True when it grew. The VM must not run."""
    if disk_size(image) >= size:
        return False
    try:
        proc.run(["qemu-img", "resize", "-f", "qcow2", str(image), str(size)])
    except PymachineError as exc:
        raise PymachineError(
            f"could not grow the disk {image} to {format_size(size)}: {exc.message}",
            hint="is the machine's VM still running? stop it and try again",
        ) from exc
    return True


# -- applying --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShareOutcome:
    share: Share
    added: bool
    change: share_hotplug.ShareChange


@dataclass(frozen=True)
class SettingsResult:
    machine: Any  # machines.Machine after the change
    changes: list[Change]
    running: bool  # the VM runs: the sizes (and device shares) wait for its next start
    saved_state: bool  # a saved state exists: the next start throws it away and boots cold
    shares: list[ShareOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class SettingsContext:
    """What a form needs to validate as a person types (load it off the GUI thread: it asks the driver)."""

    config: MachineConfig
    limits: HostLimits
    running: bool
    saved_state: bool


def context(name: str) -> SettingsContext:
    from . import machines, savestate

    cfg = machines.load_config(name)
    drv = machines.driver_for(cfg)
    _refuse_existing_host(cfg, drv, SettingsRequest(cpus=1))
    running = machines._running(cfg)
    return SettingsContext(cfg, host_limits(cfg, drv), running, savestate.describe(name) is not None)


def _refuse_existing_host(cfg: MachineConfig, drv: Any, request: SettingsRequest) -> None:
    if not drv.capabilities.existing_host:
        return
    if request.cpus is None and request.memory is None and request.disk is None:
        raise UsageError(
            f"machine '{cfg.name}' runs on another host: it sees that host's folders, not this computer's",
            hint="bind-mount a folder of that host: docker run -v /srv/data:/data ...",
        )
    raise UsageError(
        f"machine '{cfg.name}' runs on another host: its CPUs, memory and disk are that host's own",
        hint="nothing to set here; the engine there uses the whole host",
    )


def apply(name: str, request: SettingsRequest) -> SettingsResult:
    """Validate and write the change (one atomic write of config.json, under the machine's lock). A stopped
    machine's disk grows now; a running one's at its next start. Shares over sshfs are hot-plugged."""
    from . import machines, savestate

    first = machines.load_config(name)  # also a clear "does not exist" before the lock
    _refuse_existing_host(first, machines.driver_for(first), request)
    with machines._locked(name):
        cfg = machines.load_config(name)
        drv = machines.driver_for(cfg)
        p = plan(cfg, request, host_limits(cfg, drv))
        running = machines._running(cfg)
        outcomes: list[ShareOutcome] = []
        if p.changes:
            if p.config.disk > cfg.disk and not running:
                grow_disk(paths.machine(name).disk, p.config.disk)
            store.write_json(paths.machine(name).config, p.config.to_json())
            for share in p.removed:
                outcomes.append(ShareOutcome(share, False, share_hotplug.apply(name, share, False, running)))
            for share in p.added:
                outcomes.append(ShareOutcome(share, True, share_hotplug.apply(name, share, True, running)))
        saved = savestate.describe(name) is not None
    return SettingsResult(machines.get(name), p.changes, running, saved, outcomes)


def describe(result: SettingsResult) -> str:
    """The sentence both front ends print after a change."""
    name = result.machine.name
    if not result.changes:
        return f"machine '{name}': nothing to change"
    if not result.running:
        text = f"machine '{name}': {', '.join(str(c) for c in result.changes)} (applies at the next start)"
    else:
        sized = [str(c) for c in result.changes if c.field != "share"]
        parts = [f"{', '.join(sized)} (pending: at the next start; pymachine restart {name} applies it now)"]
        parts = parts if sized else []
        for o in result.shares:
            what = f"shares {o.share}" if o.added else f"no longer shares {o.share}"
            parts.append(f"{what} ({share_hotplug.phrase(o.change, name, o.added)})")
        text = f"machine '{name}': " + ", ".join(parts)
    if result.saved_state:
        text += "; its saved state is discarded: the next start boots cold"
    return text


def will_discard_saved_state(ctx: SettingsContext, p: Plan) -> bool:
    return ctx.saved_state and bool(p.changes)
