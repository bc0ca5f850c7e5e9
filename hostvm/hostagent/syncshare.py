"""Synchronized shares, the host side: a host folder copied to the VM's disk and kept in sync both ways.

The answer Docker Desktop gives to slow shared folders ("synchronized file shares"): a walk, `npm install` or
`git status` in a container then runs on the VM's own disk. Per sync share, on every link-up and before the
agent reports ready, this opens one exec channel that runs the guest side (pymachine_agent/syncshare.py, as
root) and on it:
1. reads the guest copy's manifest, walks the host folder, and merges the two against the base (the last
   state both agreed on, kept in the machine folder: sync/<id>.json) with synclogic.plan: changes made on
   either side while the machine was stopped or saved are carried over, conflicts keep both versions;
2. streams every entry the guest lacks in one pipelined stream of frames (no round trip per file), asks for
   what the host lacks, and has the guest bind-mount its copy at the share's path (nosuid,nodev);
3. from then on sends each host change seen by watchdog (coalesced for COALESCE s) and applies each change
   the guest sends (its inotify), both through syncfs.Applier, which never follows a link out of the share
   and records what it applied so that neither side sends an echo back.
Entries made on the host by a root host agent belong to the share's owner (the owner of its folder).
The state of each share (syncing, in sync, N pending, error) is written to sync-state.json for `mount list`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paramiko

from pymachine_agent import synclogic
from pymachine_agent.syncfs import Applier
from pymachine_agent.synclogic import Known

from .. import store
from .provision import AGENT_DIR

log = logging.getLogger(__name__)
GUEST_STORE = "/var/lib/pymachine/sync"
COALESCE = 0.05
START_TIMEOUT = 600.0  # the first copy of a big folder under TCG
SAVE_EVERY = 2.0  # the base is written at most this often while changes flow
RETRY_S = 2.0  # a sync channel that ended while the link lives is opened again after this


def share_id(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def guest_command(path: str, uid: int, gid: int, outer: str = "") -> str:
    """`outer`: the live share this sync share lies in (share_nesting.py); its copy is bound once that is
    mounted."""
    store_dir = f"{GUEST_STORE}/{share_id(path)}"
    args = ["--store", store_dir, "--path", path, "--uid", str(uid), "--gid", str(gid)]
    args += ["--outer", outer] if outer else []
    return f"cd {AGENT_DIR} && exec python3 -m pymachine_agent.syncshare " + shlex.join(args)


class _Writer:
    """A channel as a binary stream for synclogic.write_frame."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def write(self, data: bytes) -> None:
        self.chan.sendall(data)

    def flush(self) -> None:
        pass


class SyncShare:
    def __init__(
        self,
        path: str,
        state_dir: Path,
        report: Callable[[], None],
        on_lost: Callable[[], None] = lambda: None,
        outer: str = "",
    ) -> None:
        self.path = path
        self.outer = outer  # the live share it lies in, or ""
        self.on_lost = on_lost  # the channel ended while the link may live on (the guest side crashed)
        self.base_file = state_dir / f"{share_id(path)}.json"
        self.report = report
        st = os.stat(path) if os.path.isdir(path) else None
        self.owner = (st.st_uid, st.st_gid) if st is not None else (os.getuid(), os.getgid())
        self.known = Known()
        self.applier = Applier(path, "host", self.known, self.owner if os.geteuid() == 0 else None)
        self.lock = threading.Lock()  # the tree and `known`; never held while writing to the channel
        self.out_lock = threading.Lock()
        self.state = "pending"  # pending | syncing | in sync | lost | error
        self.error: str | None = None
        self.pending: set[str] = set()
        self.wants: list[str] = []  # guest renames this side could not make: their content is asked for
        self.wake = threading.Condition()
        self.chan: paramiko.Channel | None = None
        self.out: _Writer | None = None
        self.live = False
        self.marks: dict[str, threading.Event] = {}
        # Sent but not yet confirmed by the guest (its `marked` answer): path → (its signature before the
        # send, the mark that follows it). The base on disk keeps the signature before: a change lost with the
        # channel must not look agreed at the next start (a new host file would pass for one deleted in the
        # guest, and be deleted here).
        self.unconfirmed: dict[str, tuple[synclogic.Sig | None, int]] = {}
        self.mark = 0
        self.saved_at = 0.0
        self.watch: Any = None

    # -- state ------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state": self.state,
            "pending": len(self.pending),
            "unconfirmed": len(self.unconfirmed),  # sent, not yet confirmed applied by the guest
            "conflicts": self.applier.conflicts,
            "error": self.error,
            "entries": len(self.known.entries),
        }

    def _set(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.report()

    def load_base(self) -> dict[str, synclogic.Sig] | None:
        raw = store.read_json(self.base_file, None)
        if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
            return None
        try:
            return {k: synclogic.sig_from_json(v) for k, v in raw["entries"].items()}
        except ValueError:
            return None

    def confirm(self, mark: int) -> None:
        """The guest applied everything sent before `mark`."""
        with self.lock:
            self.unconfirmed = {k: v for k, v in self.unconfirmed.items() if v[1] > mark}

    def save_base(self) -> None:
        with self.lock:
            confirmed = dict(self.known.entries)
            for rel, (before, _mark) in self.unconfirmed.items():
                if before is None:
                    confirmed.pop(rel, None)
                else:
                    confirmed[rel] = before
            entries = {k: synclogic.sig_to_json(v) for k, v in confirmed.items()}
        self.base_file.parent.mkdir(mode=0o700, exist_ok=True)
        store.write_json(self.base_file, {"version": 1, "entries": entries})
        self.saved_at = time.monotonic()

    # -- host changes (watchdog) ------------------------------------------------------------------------
    def note(self, abspath: str) -> None:
        if abspath != self.path and abspath.startswith(self.path + "/"):
            rel = abspath[len(self.path) + 1 :]
            if not synclogic.ignored(rel):
                with self.wake:
                    self.pending.add(rel)
                    self.wake.notify()

    def flusher(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            with self.wake:
                while not ((self.pending or self.wants) and self.live) and not stopping.is_set():
                    self.wake.wait(SAVE_EVERY)
                    if self.live and time.monotonic() - self.saved_at > SAVE_EVERY and not self.pending:
                        self.save_base()
            time.sleep(COALESCE)  # a burst (an editor's save, a git checkout) in one batch
            with self.wake:
                batch, self.pending = self.pending, set()
                wants, self.wants = self.wants, []
            try:
                self.flush(batch, wants)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                log.info("sync of %s: changes not sent (%s); the next connect reconciles", self.path, exc)
            self.report()

    def flush(self, batch: set[str], wants: Sequence[str] = ()) -> None:
        """Send the host changes of `batch`: deletions, then entries shallowest first (a folder with all it
        holds, for a folder moved in whole)."""
        deletes, puts = [], set()
        touched: set[str] = set()  # what this batch sends: unconfirmed until the guest answers its mark
        with self.lock:
            for rel in sorted(batch):
                current = synclogic.sig_of(self.path, rel)
                if current is None:
                    if rel in self.known.entries:
                        deletes.append((rel, self.known.entries[rel]))
                        below = rel + "/"
                        for k, v in self.known.entries.items():
                            if k == rel or k.startswith(below):
                                self.unconfirmed.setdefault(k, (v, 0))
                                touched.add(k)
                        self.known.forget(rel)
                    continue
                if current[0] == "d" and rel not in self.known.entries:
                    # a folder new to the other side (made, or moved in whole): everything in it goes too; a
                    # known folder's own events (a name added in it) need no walk, its names have their own
                    for sub in [rel, *_below(self.path, rel)]:
                        if not self.known.is_echo(sub, synclogic.sig_of(self.path, sub)):
                            puts.add(sub)
                elif not self.known.is_echo(rel, current):
                    puts.add(rel)
            for rel in puts:
                self.unconfirmed.setdefault(rel, (self.known.entries.get(rel), 0))
            touched |= puts
            # a rename goes as a move, not as its content again (the receiver asks for it if it cannot)
            moved, deletes, kept = synclogic.split_moves(self.path, deletes, puts, self.known)
            puts = set(kept)
            self.mark += 1
            mark = self.mark
            for rel in touched:  # (sent again: confirmed only by this mark)
                self.unconfirmed[rel] = (self.unconfirmed[rel][0], mark)
        out = self.out
        if out is None or not (deletes or puts or moved or wants):
            return
        with self.out_lock:
            for rel in wants:
                synclogic.write_frame(out, {"op": "want", "path": rel})
            for rel, before in deletes:
                synclogic.write_frame(out, {"op": "delete", "path": rel, "base": list(before)})
            for frame in moved:
                synclogic.write_frame(out, frame)
            ordered = sorted(puts, key=lambda r: (r.count("/"), r))
            synclogic.send_entries(out, self.path, ordered, self.known, self.lock)
            synclogic.write_frame(out, {"op": "mark", "n": mark})  # answered once all of it is applied

    # -- one connection ----------------------------------------------------------------------------------
    def start(self, transport: paramiko.Transport, timeout: float = START_TIMEOUT) -> None:
        """Reconcile and go live on this link (raises on failure; the share's state says why)."""
        self.live = False
        self._set("syncing")
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"the host folder {self.path} does not exist")
        chan = transport.open_session(timeout=10)
        chan.settimeout(timeout)
        chan.exec_command(guest_command(self.path, *self.owner, outer=self.outer))
        inp = chan.makefile("rb", 1 << 16)
        first = synclogic.read_frame(inp)
        if first.get("op") != "manifest":
            raise OSError(f"the guest's sync side answered {first.get('op')!r}: {_stderr(chan)}")
        if first.get("version", 1) != synclogic.SYNC_VERSION:  # the first guest sides sent none: 1
            raise OSError(
                f"the guest's sync side speaks version {first.get('version')}, this host "
                f"{synclogic.SYNC_VERSION}: the machine's agent differs from this pymachine's (recreate it)"
            )
        guest = {synclogic.check_rel(k): synclogic.sig_from_json(v) for k, v in first["entries"].items()}
        with self.wake:
            self.pending.clear()  # what changes from here on is sent once live; the walk covers the rest
        with self.lock:
            self.unconfirmed.clear()  # the merge below starts from the base on disk, which kept them
            host = synclogic.manifest(self.path)
            plan = synclogic.plan(host, guest, self.load_base())
            # what the guest has is the base of every push and deletion there; the host's own deletions are
            # decided already (their base is what the host has)
            self.known.entries = dict(guest) | {rel: host[rel] for rel in plan.delete_host}
        self.chan, self.out = chan, _Writer(chan)
        self.marks = {"pulled": threading.Event(), "mounted": threading.Event()}
        threading.Thread(target=self._read, args=(chan, inp), name="sync-read", daemon=True).start()
        self._carry_out(plan, host, guest)
        deadline = time.monotonic() + timeout
        for mark in ("pulled", "mounted"):
            if not self.marks[mark].wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(self.error or f"the guest did not answer '{mark}' within {timeout:.0f} s")
        self.live = True
        self.save_base()
        self._set("in sync")
        with self.wake:
            self.wake.notify()

    def _carry_out(self, plan: synclogic.Plan, host: dict, guest: dict) -> None:
        out = self.out
        assert out is not None
        with self.out_lock:
            for rel, loser, keep in plan.conflicts:
                self.applier.conflicts += 1
                if loser == "guest":
                    synclogic.write_frame(out, {"op": "rename", "path": rel, "to": keep})
                else:
                    with self.lock:
                        self.applier.rename(rel, keep, record=False)
            synclogic.send_entries(out, self.path, plan.push, self.known, self.lock)
            for rel in plan.delete_guest:
                synclogic.write_frame(out, {"op": "delete", "path": rel, "base": list(guest[rel])})
                with self.lock:
                    self.known.forget(rel)
            synclogic.write_frame(out, {"op": "pull", "paths": plan.pull})
        with self.lock:
            for rel in plan.delete_host:
                self.applier.delete(rel, host[rel])
        with self.out_lock:
            synclogic.write_frame(out, {"op": "mount"})

    def _read(self, chan: paramiko.Channel, inp: Any) -> None:
        """Apply what the guest sends, for as long as the channel lives."""
        chan.settimeout(None)
        try:
            while True:
                frame = synclogic.read_frame(inp)
                op = frame["op"]
                if op == "put":
                    with self.lock:
                        self.applier.put(frame, inp)
                elif op == "delete":
                    with self.lock:
                        self.applier.delete(frame["path"], synclogic.base_of(frame))
                elif op == "want":  # a move it could not make: send that entry's content
                    rel = synclogic.check_rel(frame.get("path"))
                    with self.lock:
                        self.known.forget(rel)
                    self.note(os.path.join(self.path, rel))
                elif op == "move":
                    with self.lock:
                        done = self.applier.apply_move(frame)
                    if not done:  # asked by the flusher: this reader never writes (the guest's reader does)
                        with self.wake:
                            self.wants.append(synclogic.check_rel(frame["to"]))
                            self.wake.notify()
                elif op in self.marks:
                    self.marks[op].set()
                elif op == "marked":
                    self.confirm(int(frame.get("n") or 0))
                elif op == "error":
                    self.error = str(frame.get("error"))
                    log.warning("sync of %s: the guest says %s", self.path, self.error)
                    if not self.marks["mounted"].is_set():
                        self._set("error", self.error)
                self.report()
        except (EOFError, OSError, ValueError, paramiko.SSHException) as exc:
            log.info("sync of %s: the channel ended (%s)", self.path, exc)
        finally:
            chan.close()
            if self.chan is chan:
                self.live, self.chan, self.out = False, None, None
                if self.state == "in sync":
                    self.save_base()
                    self._set("lost", "the sync channel ended; synced again on reconnect")
                    self.on_lost()


def _below(root: str, rel: str) -> list[str]:
    found = []
    for dirpath, dirs, files in os.walk(os.path.join(root, rel)):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _stderr(chan: paramiko.Channel) -> str:
    try:
        return chan.recv_stderr(4096).decode(errors="replace").strip()
    except OSError:
        return ""


class SyncShares:
    """The machine's sync shares: reconciled on every link-up before ready, live in between."""

    def __init__(
        self,
        paths: list[str],
        machine_dir: Path,
        on_event: Callable[..., None],
        outers: dict[str, str] | None = None,
    ) -> None:
        """`outers`: sync share → the live share that holds it (machine_sync_outers)."""
        self.state_file = machine_dir / "sync-state.json"
        self.emit = on_event
        self.stopping = threading.Event()
        self.state_lock = threading.Lock()
        self.shares = {
            p: SyncShare(
                p,
                machine_dir / "sync",
                self.write_state,
                lambda p=p: self._lost(p),
                (outers or {}).get(p, ""),
            )
            for p in paths
        }
        self.observer: Any = None
        self.transport: paramiko.Transport | None = None
        for share in self.shares.values():
            threading.Thread(
                target=share.flusher, args=(self.stopping,), name="sync-flush", daemon=True
            ).start()
        if self.shares:
            self.write_state()

    def write_state(self) -> None:
        # Snapshot and write under one lock: the reader thread and start() report within moments of each
        # other ("mounted" arrives, then "in sync" is set), and an unserialized older snapshot could be
        # renamed over the newer one, leaving `mount list` at "syncing" until the next change (CI).
        with self.state_lock:
            store.write_json(self.state_file, {p: s.snapshot() for p, s in self.shares.items()})

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.shares.values()]

    def _watch(self, share: SyncShare) -> None:
        if share.watch is not None:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                share.note(os.fsdecode(event.src_path))
                if getattr(event, "dest_path", ""):
                    share.note(os.fsdecode(event.dest_path))

        if self.observer is None:
            self.observer = Observer()
            self.observer.start()
        share.watch = self.observer.schedule(Handler(), share.path, recursive=True)

    def _lost(self, path: str) -> None:
        """A share's channel ended: when the link itself lives on (the guest side was killed or crashed),
        start it again after RETRY_S; a dead link is the next link-up's to sync."""

        def again() -> None:
            time.sleep(RETRY_S)
            transport = self.transport
            if not self.stopping.is_set() and transport is not None and transport.is_active():
                self.sync(transport, self.shares[path])

        threading.Thread(target=again, name="sync-again", daemon=True).start()

    def sync_all(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        for share in self.shares.values():
            self.sync(transport, share)

    def sync(self, transport: paramiko.Transport, share: SyncShare) -> None:
        try:
            self._watch(share)
            share.start(transport)
        except Exception as exc:  # noqa: BLE001 - any failure is this share's state, shown in mount list
            log.warning("sync of %s failed: %s", share.path, exc)
            share._set("error", str(exc) or type(exc).__name__)
            self.emit(path=share.path, state="failed", transport="sync", error=share.error)
            return
        self.emit(path=share.path, state="mounted", transport="sync", entries=len(share.known.entries))

    def stop(self) -> None:
        self.stopping.set()
        for share in self.shares.values():
            with share.wake:
                share.wake.notify()
            if share.live:
                share.save_base()
            if share.chan is not None:
                share.chan.close()
        if self.observer is not None:
            self.observer.stop()


def machine_sync_paths(machine_config: Path) -> list[str]:
    """config.json's sync shares."""
    from ..config import shares_in

    return [s.path for s in shares_in(machine_config) if s.sync]


def machine_sync_outers(machine_config: Path) -> dict[str, str]:
    """config.json's sync shares that lie inside a live share → that share (share_nesting.nested_syncs)."""
    from ..config import shares_in
    from ..share_nesting import nested_syncs

    return dict(nested_syncs(shares_in(machine_config)))
