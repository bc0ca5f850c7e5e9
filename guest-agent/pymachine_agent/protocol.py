"""The host ↔ guest protocol: version and the checksum of the agent's own sources.

The host reads this module as data (it imports the copy it ships) and compares `source_checksum()` with the
guest's answer to `GET /pymachine/v1/info`, re-provisioning the agent when they differ, so that host and guest
never drift apart across upgrades. See docs/contracts.md §4.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

# 2: the `watch` event (host paths containers bind-mount), POST /pymachine/v1/fs-events (host changes) and
#    PUT /pymachine/v1/shares (the share list after a hot-plug; a sync share's entry has transport "sync").
#    Sync shares speak synclogic's frames on an exec channel of their own (synclogic.SYNC_VERSION).
# 3: POST /pymachine/v1/quiesce and /remount (the device shares unmounted before a save and mounted again
#    after the resume, by the agent: devshares.py; a 404 from an older agent means the host runs the scripts
#    over an SSH exec as before).
PROTOCOL_VERSION = 3
AGENT_VERSION = "0.1.0"
API_PREFIX = "/pymachine/v1"

_PACKAGE_ROOT = Path(__file__).resolve().parent


def share_entry(path: str, readonly: bool, sync: bool) -> dict:
    """One share as `PUT /pymachine/v1/shares` takes it and `GET /pymachine/v1/info` reports it."""
    return {"path": path, "readonly": readonly, **({"transport": "sync"} if sync else {})}


def same_shares(reported: object, wanted: list[dict]) -> bool:
    """Whether the share list a guest agent reported is `wanted`, in any order (malformed: it differs)."""
    if not isinstance(reported, list) or not all(isinstance(s, dict) for s in reported):
        return False
    return sorted(reported, key=_share_path) == sorted(wanted, key=_share_path)


def _share_path(share: dict) -> str:
    return str(share.get("path"))


def source_files(root: Path = _PACKAGE_ROOT) -> list[Path]:
    """The files that make up the agent (what gets copied into the guest). os.walk, not Path.rglob: the guest
    agent lists them at every host agent connect (`info`), and rglob, which also stats every cached .pyc,
    took 0.1-0.7 s of that under TCG (os.walk: 0.01-0.08 s). Sorted as Paths: the checksum's order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [Path(folder, f) for f in files if f.endswith((".py", ".json"))]
    return sorted(p for p in found if p.is_file())


def source_checksum(root: Path = _PACKAGE_ROOT) -> str:
    """sha256 over relative paths and contents of every agent source file, stable across machines."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


# -- the event and ack shapes of GET /pymachine/v1/events and POST /pymachine/v1/ports/ack -------------


_own_checksum: tuple[tuple[tuple[str, int, int], ...], str] | None = None  # (files' stat signature, checksum)
_checksum_lock = threading.Lock()


def info() -> dict:
    """The body of `GET /pymachine/v1/info`. Re-reading every source file per call slowed each host agent
    connect, so the checksum is kept while the files' names, sizes and mtimes stay the same; a copy in the
    guest that changed on disk (a re-provision cut short, a hand edit) is still seen at the next connect."""
    global _own_checksum
    # one at a time: a request that comes while the start's thread reads the files waits for its result
    # instead of reading them all again beside it (under TCG, at the busiest moment of a boot)
    with _checksum_lock:
        signature = tuple((str(p), st.st_size, st.st_mtime_ns) for p in source_files() for st in (p.stat(),))
        if _own_checksum is None or _own_checksum[0] != signature:
            _own_checksum = (signature, source_checksum())
        checksum = _own_checksum[1]
    return {"protocol": PROTOCOL_VERSION, "agent_version": AGENT_VERSION, "agent_checksum": checksum}


def hello_event() -> dict:
    """The first line of the event stream."""
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": AGENT_VERSION}


def port_event(
    action: str, event_id: str, container: str, proto: str, host_ip: str, host_port: int, guest_port: int
) -> dict:
    """A port `add` or `remove`: the port is reachable inside the guest at 127.0.0.1:<guest_port>."""
    if action not in ("add", "remove"):
        raise ValueError(f"bad port action {action!r}")
    return {
        "type": "port",
        "action": action,
        "id": event_id,
        "container": container,
        "proto": proto,
        "host_ip": host_ip,
        "host_port": int(host_port),
        "guest_port": int(guest_port),
    }


def ack(event_id: str, ok: bool, error: str = "") -> dict:
    """The body the host agent posts to `/pymachine/v1/ports/ack`."""
    body: dict = {"id": event_id, "ok": bool(ok)}
    if not ok:
        body["error"] = error or "refused"
    return body


def parse_ack(body: object) -> tuple[str, bool, str]:
    """Validate an ack body; returns (event id, ok, error). Raises ValueError on a malformed body."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("id"), str)
        or not isinstance(body.get("ok"), bool)
    ):
        raise ValueError('an ack is {"id": "<event id>", "ok": true|false, "error": "..."}')
    return body["id"], body["ok"], str(body.get("error") or "")


# -- host folder change events (docs/hostagent.md "Change events") ---------------------------------------
# The guest says which host paths running containers bind-mount (`watch`, the whole set each time, also in
# every resync); the host agent watches exactly those and posts what changed to `/pymachine/v1/fs-events`.

MAX_FS_CHANGES = 4096  # one POST; the host splits larger batches


def watch_event(paths: list[str]) -> dict:
    """The set of host paths to watch (recursively for folders), replacing the previous set."""
    return {"type": "watch", "paths": sorted(paths)}


def parse_watch(event: object) -> list[str]:
    """Validate a `watch` event; returns its paths. Raises ValueError on a malformed one."""
    paths = event.get("paths") if isinstance(event, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise ValueError('a watch event is {"type": "watch", "paths": ["/abs/path", ...]}')
    return paths


def fs_change(path: str, stat_result: object | None, touch: bool = True) -> dict:
    """One changed host path: its permission bits when it exists (the guest sets them again, which fires
    IN_ATTRIB there), `exists: false` when it is gone. The guest takes every path afresh from the host first
    (its virtiofs caches); `touch: false` asks for only that (a flood, whose folders carry the events)."""
    quiet = {} if touch else {"touch": False}
    if stat_result is None:
        return {"path": path, "exists": False, **quiet}
    return {"path": path, "exists": True, "mode": stat.S_IMODE(stat_result.st_mode), **quiet}  # type: ignore[attr-defined]


def parse_fs_changes(body: object) -> list[dict]:
    """Validate the body of `POST /pymachine/v1/fs-events`, `{"changes": [fs_change, ...]}`."""
    changes = body.get("changes") if isinstance(body, dict) else None
    if not isinstance(changes, list) or len(changes) > MAX_FS_CHANGES:
        raise ValueError(f'fs-events is {{"changes": [...]}} with at most {MAX_FS_CHANGES} entries')
    for c in changes:
        ok = isinstance(c, dict) and isinstance(c.get("path"), str) and c["path"].startswith("/")
        ok = ok and isinstance(c.get("touch", True), bool)
        if ok and c.get("exists", True):
            mode = c.get("mode")
            ok = isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777
        if not ok:
            raise ValueError(f"bad change {c!r}: {{path, exists, mode, touch}}")
    return changes


# -- the device shares around a save: unmounted before, mounted again after the resume (devshares.py) ----
DEVICE_TRANSPORTS = ("virtiofs", "9p")
DEVICE_TAG = re.compile(r"pm[0-9]{1,4}")  # hostvm/shares.devices names them pm0, pm1, ...
REMOUNT_WAIT_MAX_S = 60.0


@dataclass(frozen=True)
class DeviceShare:
    tag: str
    path: str
    transport: str
    readonly: bool


def device_shares_request(shares: list[dict], wait_s: float | None = None) -> dict:
    """The body of `POST /pymachine/v1/remount` (with `wait_s`) and `/quiesce`: `shares` as the host has
    them (hostvm ShareDevice.guest(): tag, path, transport, readonly)."""
    return {"shares": shares, **({} if wait_s is None else {"wait_s": wait_s})}


def parse_device_shares(body: object, listed: dict[str, bool]) -> tuple[list[DeviceShare], float]:
    """Validate a remount or quiesce body against the agent's share list (`listed`: path -> read-only): only a
    share's own path may be mounted on (or unmounted), read-only when either side says so. (shares, wait_s).
    Raises ValueError naming what is wrong."""
    entries = body.get("shares") if isinstance(body, dict) else None
    wait_s = body.get("wait_s", 20.0) if isinstance(body, dict) else None
    if not isinstance(entries, list) or not isinstance(wait_s, (int, float)) or isinstance(wait_s, bool):
        shape = '{"shares": [{"tag", "path", "transport", "readonly"}, ...], "wait_s": seconds}'
        raise ValueError(f"the body is {shape}")
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("readonly"), bool):
            raise ValueError(f"a share entry is an object with a boolean readonly: {e!r}")
        tag, path, transport = e.get("tag"), e.get("path"), e.get("transport")
        if not isinstance(tag, str) or not DEVICE_TAG.fullmatch(tag):
            raise ValueError(f"bad share tag {tag!r}")
        if transport not in DEVICE_TRANSPORTS:
            raise ValueError(f"a device share is virtiofs or 9p, not {transport!r}")
        if not isinstance(path, str) or path not in listed:
            raise ValueError(f"{path!r} is not one of this machine's shares")
        out.append(DeviceShare(tag, path, transport, e["readonly"] or listed[path]))
    return out, min(max(float(wait_s), 0.0), REMOUNT_WAIT_MAX_S)
