"""Synchronized shares, the pure part both sides run: entry signatures, the start-up plan, the conflict rule,
echo suppression and the framing of the stream between them.

A sync share keeps a copy of a host folder on the VM's own disk (guest side: syncshare.py; host side:
hostvm/hostagent/syncshare.py). Both sides describe each entry of their tree by a *signature* that says what
matters for equality: a file's size, mtime (ns) and permission bits, a folder's bits, a link's target. Whoever
copies an entry gives the copy the same mtime and bits, so one signature is valid on both sides, and the host
keeps the last signature both sides agreed on per path (the *base*) across runs. With it a start is a
three-way merge and a change made on either side while the machine was stopped is carried over.

The conflict rule (both sides changed one path since the base, or a change arrives for a path with an unsent
change of its own): the newer mtime wins, the host wins a tie; the losing version is never dropped but kept
beside the winner as `NAME.conflict-host-<stamp>` or `NAME.conflict-guest-<stamp>` (which then syncs like
any new file). A deletion against a change loses: the changed file is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

Sig = tuple  # ("f", size, mtime_ns, mode) | ("d", mode) | ("l", target)
# The frames' version, in the guest's first frame (manifest). Both sides ship in one agent checksum, which
# the host agent re-provisions on drift (protocol.py); this catches a guest copy it could not replace.
SYNC_VERSION = 3  # 2: mark/marked (the host's base keeps only what the guest confirmed); 3: move/want
TEMP_PREFIX = ".pmsync-"  # a copy being written; never synced, never reported
MAX_HEADER = 1 << 26  # a manifest of a few hundred thousand names still fits
CHUNK = 1 << 20


def signature(st: os.stat_result, target: str = "") -> Sig | None:
    """The signature of an lstat result (None for what is not synced: devices, FIFOs, sockets)."""
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if stat.S_ISREG(st.st_mode):
        return ("f", st.st_size, st.st_mtime_ns, mode)
    if stat.S_ISDIR(st.st_mode):
        return ("d", mode)
    if stat.S_ISLNK(st.st_mode):
        return ("l", target)
    return None


def sig_of(root: str, rel: str) -> Sig | None:
    path = os.path.join(root, rel)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return signature(st, os.readlink(path) if stat.S_ISLNK(st.st_mode) else "")


def ignored(rel: str) -> bool:
    return os.path.basename(rel).startswith(TEMP_PREFIX)


def manifest(root: str) -> dict[str, Sig]:
    """Every synced entry under `root` (relative paths, the root itself left out); links are not followed."""
    out: dict[str, Sig] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if ignored(rel):
                continue
            sig = sig_of(root, rel)
            if sig is not None:
                out[rel] = sig
    return out


def conflict_name(rel: str, side: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{rel}.conflict-{side}-{stamp}"


def host_wins(host: Sig | None, guest: Sig | None) -> bool:
    """The conflict rule: a deletion loses against a change; of two versions the newer mtime wins, the host
    a tie (folders and links carry no mtime: the host wins)."""
    if host is None or guest is None:
        return guest is None
    h_time = host[2] if host[0] == "f" else 0
    g_time = guest[2] if guest[0] == "f" else 0
    return h_time >= g_time


@dataclass
class Plan:
    """What a start does to bring the two copies together (paths relative to the share)."""

    push: list[str] = field(default_factory=list)  # host → guest, in this order (folders before contents)
    pull: list[str] = field(default_factory=list)  # guest → host
    delete_guest: list[str] = field(default_factory=list)  # deepest first
    delete_host: list[str] = field(default_factory=list)
    # (path, the side whose version loses, the name it is kept under, on the side that has it)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    agreed: dict[str, Sig] = field(default_factory=dict)  # entries already equal on both sides


def plan(
    host: dict[str, Sig], guest: dict[str, Sig], base: dict[str, Sig] | None, now: float | None = None
) -> Plan:
    """The three-way merge of a start. Without a base (the first start, a lost state file) nothing counts as
    deleted: what only one side has is copied to the other, and differing versions are conflicts."""
    p = Plan()
    base = base or {}
    for rel in sorted(set(host) | set(guest)):
        h, g, b = host.get(rel), guest.get(rel), base.get(rel)
        if h == g:
            p.agreed[rel] = h  # type: ignore[assignment]
        elif g == b:  # only the host changed it
            (p.push if h is not None else p.delete_guest).append(rel)
        elif h == b:  # only the guest changed it
            (p.pull if g is not None else p.delete_host).append(rel)
        elif h is not None and g is not None and h[0] == g[0] == "d":
            p.push.append(rel)  # a folder's bits changed on both sides: the host's
        elif host_wins(h, g):
            if g is not None and g[0] != "d":  # keep the guest's version under another name, on both sides
                keep = conflict_name(rel, "guest", now)
                p.conflicts.append((rel, "guest", keep))
                p.pull.append(keep)
            p.push.append(rel)
        else:
            if h is not None and h[0] != "d":
                keep = conflict_name(rel, "host", now)
                p.conflicts.append((rel, "host", keep))
                p.push.append(keep)
            p.pull.append(rel)
    # a folder is deleted only when nothing below it survives on that side
    keep_guest = set(p.agreed) | set(p.push) | {r for r in guest if r not in p.delete_guest}
    keep_host = set(p.agreed) | set(p.pull) | {r for r in host if r not in p.delete_host}
    p.delete_guest = _deletable(p.delete_guest, keep_guest)
    p.delete_host = _deletable(p.delete_host, keep_host)
    p.push.sort(key=_depth_order)
    p.pull.sort(key=_depth_order)
    return p


def _depth_order(rel: str) -> tuple[int, str]:
    return (rel.count("/"), rel)


def _deletable(paths: list[str], kept: set[str]) -> list[str]:
    out = [r for r in paths if not any(k.startswith(r + "/") for k in kept)]
    return sorted(out, key=lambda r: (-r.count("/"), r))


class Known:
    """The signature both sides last agreed on per path. A change whose current signature equals it is the
    echo of one this side applied itself (or no change at all) and is not sent back: no loops."""

    def __init__(self, entries: dict[str, Sig] | None = None) -> None:
        self.entries: dict[str, Sig] = dict(entries or {})

    def is_echo(self, rel: str, current: Sig | None) -> bool:
        return self.entries.get(rel) == current

    def set(self, rel: str, sig: Sig | None) -> None:
        if sig is None:
            self.forget(rel)
        else:
            self.entries[rel] = sig

    def forget(self, rel: str) -> None:
        """`rel` and everything below it (a deleted folder)."""
        self.entries.pop(rel, None)
        prefix = rel + "/"
        for k in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[k]

    def unsent_change(self, rel: str, current: Sig | None) -> bool:
        """This side has a change of `rel` it has not sent (a deletion from the other side spares it)."""
        return current is not None and current != self.entries.get(rel) and current[0] != "d"


def moves(deleted: dict[str, Sig], added: dict[str, Sig]) -> list[tuple[str, str]]:
    """Renames among what one batch deleted (path → the signature both sides agreed on) and added (path → its
    signature now): a file or link whose signature is the same under a new name (`mv` keeps size, mtime and
    bits) is sent as a `move`, not as its content again. A signature that several deleted or several added
    names share is ambiguous and left as a delete and a put; folders too (their entries carry their own)."""
    olds: dict[Sig, list[str]] = {}
    news: dict[Sig, list[str]] = {}
    for group, entries in ((olds, deleted), (news, added)):
        for rel, sig in entries.items():
            if sig is not None and sig[0] in ("f", "l"):
                group.setdefault(sig, []).append(rel)
    return sorted(
        (o[0], news[sig][0]) for sig, o in olds.items() if len(o) == 1 and len(news.get(sig, ())) == 1
    )


def split_moves(
    root: str, deletes: list[tuple[str, Sig]], puts: Iterable[str], known: Known
) -> tuple[list[dict], list[tuple[str, Sig]], list[str]]:
    """A batch's deletions and puts as (the `move` frames of the renames among them (`moves`), the deletions
    left, the puts left); each new name is recorded in `known` as sent."""
    added = {rel: sig_of(root, rel) for rel in puts}
    frames = []
    for old, new in moves(dict(deletes), added):  # type: ignore[arg-type]
        sig = added[new]
        known.set(new, sig)
        content = digest(root, new) if sig[0] == "f" else ""  # type: ignore[index]
        frames.append({"op": "move", "path": old, "to": new, "base": list(sig), "digest": content})  # type: ignore[arg-type]
    gone, came = {m["path"] for m in frames}, {m["to"] for m in frames}
    return frames, [d for d in deletes if d[0] not in gone], [rel for rel in added if rel not in came]


def digest(root: str, rel: str) -> str:
    """A file's content hash, which a `move` carries: size and a coarse mtime (one clock tick) could match a
    different file deleted in the same batch (files unpacked with their times kept), and the receiver
    renames only what has this content. "" when it cannot be read."""
    try:
        with open(os.path.join(root, rel), "rb", opener=_nofollow) as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def crossed(current: Sig | None, base: Sig | None) -> bool:
    """Whether an entry arriving with `base` (the sender's signature of the path before its change) meets a
    different version here: a change of this side not sent yet, or one in flight the other way. Folders
    never conflict (only their bits could differ)."""
    return current is not None and current[0] != "d" and current != base


def base_of(header: dict[str, Any]) -> Sig | None:
    raw = header.get("base")
    return sig_from_json(raw) if raw else None


def sig_to_json(sig: Sig) -> list[Any]:
    return list(sig)


def sig_from_json(value: Any) -> Sig:
    if not isinstance(value, list) or not value or value[0] not in ("f", "d", "l"):
        raise ValueError(f"bad signature {value!r}")
    return tuple(value)


def check_rel(rel: object) -> str:
    """A relative path as the other side may send it: normalised, inside the share, never the share itself."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        raise ValueError(f"bad path {rel!r}")
    if os.path.normpath(rel) != rel or rel == "." or rel.split("/")[0] == "..":
        raise ValueError(f"bad path {rel!r}")
    return rel


# -- framing: a 4-byte length, a JSON header, then `size` bytes of content when the header has one --------
def write_frame(out: BinaryIO, header: dict[str, Any], body: bytes = b"") -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    out.write(struct.pack(">I", len(raw)) + raw + body)


def read_exact(inp: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        data = inp.read(min(left, CHUNK))
        if not data:
            raise EOFError("the other side closed the sync stream")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def read_frame(inp: BinaryIO) -> dict[str, Any]:
    (size,) = struct.unpack(">I", read_exact(inp, 4))
    if size > MAX_HEADER:
        raise ValueError(f"sync frame header of {size} bytes")
    header = json.loads(read_exact(inp, size))
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ValueError("a sync frame is {op: ...}")
    return header


def entry_frames(root: str, rels: list[str]) -> Iterator[tuple[dict[str, Any], BinaryIO | None]]:
    """`put` headers for `rels` as they are now (a file's content follows its header; the reader of the
    returned file object streams it). An entry gone meanwhile is skipped: its deletion comes as an event."""
    for rel in rels:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                fh: BinaryIO | None = open(path, "rb", opener=_nofollow)  # noqa: SIM115 - closed by the caller
                st = os.fstat(fh.fileno())
                sig = signature(st)
            else:
                fh = None
                sig = signature(st, os.readlink(path) if stat.S_ISLNK(st.st_mode) else "")
        except OSError:
            continue
        if sig is None:
            continue
        header: dict[str, Any] = {"op": "put", "path": rel, "sig": sig_to_json(sig)}
        if sig[0] == "f":
            header["size"] = sig[1]
        yield header, fh


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))


def send_entries(
    out: BinaryIO, root: str, rels: list[str], sent: Known | None = None, lock: Any = None, base: bool = True
) -> int:
    """Write the `put` frames of `rels`, content streamed in chunks; returns how many were sent. A file that
    shrank while being read is padded to the size its header promised; the close of the write that shrank it
    is another event, which sends it again (its signature then differs from the one recorded here). `lock`
    guards `sent` only: the stream is written without it, so the reader of the other direction never waits
    on a blocked write (two sides each writing while holding what their reader needs would deadlock). Each
    entry carries its `base` (the signature `sent` had for it); without `base`, none: what the receiver
    asked for (a pull) replaces what it has."""
    count = 0
    for header, fh in entry_frames(root, rels):
        if sent is not None:
            with lock or contextlib.nullcontext():
                before = sent.entries.get(header["path"])
                sent.set(header["path"], sig_from_json(header["sig"]))
            if before is not None and base:
                header["base"] = sig_to_json(before)  # what the receiver must have for this not to conflict
        if fh is None:
            write_frame(out, header)
        else:
            with fh:
                write_frame(out, header)
                left = header["size"]
                while left:
                    data = fh.read(min(left, CHUNK)) or b"\0" * min(left, CHUNK)
                    out.write(data)
                    left -= len(data)
        count += 1
    return count
