"""Bind sources inside a machine: host folders shared into the VM at their own path.

The machine's agent.json lists its shares (`"shares": [{"path", "readonly", "transport"}]`, written by the
host from config.json; the guest init mounts each one at its path before the agent starts, or the host agent
right after it connects for sshfs). With that list a bind source (`-v SRC:DST`, `--mount type=bind`, compose's
`.:/app` which the client resolves to an absolute host path) is a *host* path and must lie in a share; a path
outside every share is refused with the command that shares it, never bound as an empty VM folder.
Without a `shares` key (the agent run on a host by the privileged tests, an ssh-provisioned host, an old
seed) every bind source is a guest path, as before.

The few VM paths let through are the ones Docker Desktop lets through as well: the engine socket, which a
container asks for as `/var/run/docker.sock` (Docker Desktop maps that to its VM's engine; here it is the
agent's containers' socket beside its own, whatever path that listens on: Docker's API without the host
agent's /pymachine/... protocol, api/server.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import protocol, revalidate
from .errors import ShareError
from .runtime.mounts import SHARE_OPTION, is_mountpoint
from .runtime.spec import Mount

# the paths a container names the engine socket by (/var/run is a link to /run in the VM and on most hosts)
ENGINE_SOCKET_ALIASES = ("/var/run/docker.sock", "/run/docker.sock")
# the init's record of the shares it mounted before the agent started, an error for each it could not
MOUNT_REPORT = "/run/pymachine/shares.json"


def mount_report(path: str = MOUNT_REPORT) -> list[Any] | None:
    """The init's mount report (a list of {path, tag, transport, error}); None where there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, list) else None


@dataclass(frozen=True)
class Share:
    path: str
    readonly: bool = False
    transport: str = ""


def parse_shares(value: Any) -> list[Share] | None:
    """agent.json's `shares` → Shares (None when the key is absent). Raises ValueError on a malformed list."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("shares must be a list of {path, readonly, transport}")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ValueError(f"a share is {{'path': '/abs/path', 'readonly': false}}, not {item!r}")
        path = item["path"]
        if not path.startswith("/") or os.path.normpath(path) != path:
            raise ValueError(f"share path {path!r} must be absolute and normalised")
        out.append(Share(path, bool(item.get("readonly", False)), str(item.get("transport") or "")))
    return out


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Shares:
    """The bind rules of one machine. `shares` None = no share list (every bind source is a guest path)."""

    def __init__(
        self,
        shares: list[Share] | None,
        machine: str = "",
        engine_socket: str = "",
        is_mount: Callable[[str], bool] = is_mountpoint,
        container_socket: str = "",
    ) -> None:
        self.shares = shares
        self.machine = machine or "default"
        self.engine_socket = engine_socket
        # what a container asking for the engine socket gets bound: Docker's API only (api/server.py)
        self.container_socket = container_socket or engine_socket
        self.is_mount = is_mount

    @classmethod
    def from_settings(
        cls, settings: dict[str, Any], engine_socket: str = "", container_socket: str = ""
    ) -> Shares:
        machine = str(settings.get("machine") or "")
        shares = parse_shares(settings.get("shares"))
        return cls(shares, machine, engine_socket, container_socket=container_socket)

    @property
    def enabled(self) -> bool:
        return self.shares is not None

    def listed(self) -> list[dict[str, Any]] | None:
        """The share list in the shape the host agent PUTs it (`/pymachine/v1/shares`), so that it can tell
        whether this agent has it already (it then sends nothing)."""
        if self.shares is None:
            return None
        return [protocol.share_entry(s.path, s.readonly, s.transport == "sync") for s in self.shares]

    def find(self, path: str) -> Share | None:
        """The share `path` lies in: the deepest (a sync share may lie inside a live one, its copy bound over
        that sub-path; live shares never nest)."""
        found = [s for s in self.shares or [] if within(path, s.path)]
        return max(found, key=lambda s: len(s.path)) if found else None

    def _not_shared(self, path: str, asked: str) -> ShareError:
        listed = ", ".join(s.path + (" (ro)" if s.readonly else "") for s in self.shares or []) or "none"
        via = f" (the bind source {asked} leads there)" if asked != path else ""
        return ShareError(
            400,
            f"path {path} is not shared with machine '{self.machine}': pymachine mount add {self.machine} "
            f"{path}{via}; shared now: {listed}",
        )

    def _checked(self, m: Mount, create: bool) -> Mount:
        """One bind against the shares: its share mounted, the source there (created for `-v` when
        `create`), a read-only share forcing a read-only bind. Returns the mount to use."""
        if self.engine_socket and m.source in (
            *ENGINE_SOCKET_ALIASES,
            self.engine_socket,
            self.container_socket,
        ):
            return dataclasses.replace(m, source=self.container_socket)
        source = os.path.normpath(m.source)
        share = self.find(source)
        if share is None:
            raise self._not_shared(source, m.source)
        self._mounted(share, source)
        # the VM's view of the path as the host has it now, not as its virtiofs caches remember it (a folder
        # deleted or replaced on the host since would be bound, or not created, for good)
        revalidate.refresh([source])
        # resolved before anything is made: a link in the share that leads elsewhere would bind (or, for a
        # missing -v source, create) a VM folder, not the user's
        real = os.path.realpath(source)
        if real != source:
            target = self.find(real)
            if target is None:
                raise self._not_shared(real, source)
            share = target
            self._mounted(share, source)
            revalidate.refresh([real])
        if not os.path.lexists(source) and create and share.readonly:
            raise ShareError(
                400, f"bind source path does not exist: {source}, and share {share.path} is read-only"
            )
        _ensure_source(source, create)
        # the runtime checks the share again at every start, restarts included (runtime/mounts.py)
        options = [o for o in m.options if not o.startswith(SHARE_OPTION)] + [SHARE_OPTION + share.path]
        return dataclasses.replace(m, source=source, readonly=m.readonly or share.readonly, options=options)

    def _mounted(self, share: Share, source: str) -> None:
        if not self.is_mount(share.path):
            # an empty mountpoint must never stand in for the user's folder
            raise ShareError(
                503,
                f"share {share.path} of machine '{self.machine}' is not mounted in the VM, so {source} "
                f"cannot be bound: restart the machine (pymachine stop {self.machine}; "
                f"pymachine start {self.machine}) and see its log",
            )

    def check(self, mounts: list[Mount], binds: Iterable[str], create: bool = True) -> list[Mount]:
        """The container's mounts with every bind checked (see `_checked`); `binds` are HostConfig.Binds
        (`-v`), whose missing sources are created, unlike `--mount type=bind`'s. Unchanged without shares."""
        from_v = {os.path.normpath(b.split(":", 1)[0]) for b in binds}
        if not self.enabled:
            for m in mounts:
                if m.type == "bind":
                    _ensure_source(m.source, create and os.path.normpath(m.source) in from_v)
            return mounts
        return [
            self._checked(m, create and os.path.normpath(m.source) in from_v) if m.type == "bind" else m
            for m in mounts
        ]

    def watched(self, mounts: Iterable[Mount]) -> set[str]:
        """The bind sources in shares: the host paths whose changes the host agent forwards."""
        if not self.enabled:
            return set()
        # a sync share's copy is on the VM's disk: inotify fires there without the host's help
        return {
            m.source
            for m in mounts
            if m.type == "bind" and (share := self.find(m.source)) is not None and share.transport != "sync"
        }


def _ensure_source(source: str, create: bool) -> None:
    """dockerd's rule for a missing bind source: `-v` makes the folder, `--mount type=bind` is a 400 at
    create (not a failure at start)."""
    if os.path.lexists(source) or source in ENGINE_SOCKET_ALIASES:
        return
    if not create:
        raise ShareError(
            400, f'invalid mount config for type "bind": bind source path does not exist: {source}'
        )
    os.makedirs(source, 0o755, exist_ok=True)
