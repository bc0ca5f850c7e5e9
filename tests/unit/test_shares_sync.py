"""Sync shares, the pure part and the applier on plain folders: the start-up merge, the conflict rule, echo
suppression, and that what the other side sends never leaves the share. The guest process (inotify) runs as a
child over pipes here too; the whole path through a VM is tests/vm/test_shares_sync_vm.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pymachine.hostvm import config as cfgmod
from pymachine_agent import synclogic
from pymachine_agent.syncfs import Applier
from pymachine_agent.synclogic import Known, plan

F1 = ("f", 1, 100, 0o644)
F2 = ("f", 2, 200, 0o644)
F3 = ("f", 3, 300, 0o644)
D = ("d", 0o755)


# -- the start-up merge -----------------------------------------------------------------------------------
def test_the_first_start_copies_everything_to_the_empty_guest() -> None:
    p = plan({"a": F1, "d": D, "d/b": F2}, {}, None)
    assert p.push == ["a", "d", "d/b"] and not (p.pull or p.delete_guest or p.delete_host or p.conflicts)


def test_changes_on_one_side_go_to_the_other() -> None:
    base = {"a": F1, "b": F1, "c": F1, "d": F1}
    host = {"a": F2, "b": F1, "d": F1}  # a changed, c deleted on the host
    guest = {"a": F1, "b": F3, "c": F1}  # b changed, d deleted in the guest
    p = plan(host, guest, base)
    assert p.push == ["a"] and p.pull == ["b"]
    assert p.delete_guest == ["c"] and p.delete_host == ["d"]
    assert not p.conflicts


def test_without_a_base_nothing_counts_as_deleted() -> None:
    p = plan({"h": F1}, {"g": F2}, None)
    assert p.push == ["h"] and p.pull == ["g"] and not (p.delete_guest or p.delete_host)


def test_a_conflict_keeps_the_losers_version_under_another_name() -> None:
    base = {"x": F1, "y": F1}
    # x: the host's is newer; y: the guest's is newer
    p = plan({"x": F3, "y": F2}, {"x": F2, "y": F3}, base, now=0)
    assert ("x", "guest", "x.conflict-guest-19700101-000000") in p.conflicts
    assert ("y", "host", "y.conflict-host-19700101-000000") in p.conflicts
    assert "x" in p.push and "x.conflict-guest-19700101-000000" in p.pull
    assert "y" in p.pull and "y.conflict-host-19700101-000000" in p.push


def test_a_tie_goes_to_the_host_and_a_deletion_loses_to_a_change() -> None:
    same_time = ("f", 9, 100, 0o644)
    assert synclogic.host_wins(F1, same_time)
    p = plan({}, {"x": F2}, {"x": F1})  # deleted on the host, changed in the guest
    assert p.pull == ["x"] and not p.delete_host and not p.delete_guest


def test_a_folder_is_deleted_only_when_nothing_in_it_survives() -> None:
    base = {"d": D, "d/a": F1, "d/b": F1}
    # the host deleted the folder; the guest changed d/b meanwhile
    p = plan({}, {"d": D, "d/a": F1, "d/b": F2}, base)
    assert p.delete_guest == ["d/a"] and p.pull == ["d/b"]


# -- echo suppression and the conflict check on arrival ------------------------------------------------------
def test_what_a_side_applied_is_an_echo_for_its_watcher() -> None:
    k = Known({"a": F1})
    assert k.is_echo("a", F1) and not k.is_echo("a", F2)
    k.forget("a")
    assert k.is_echo("a", None)


def test_an_arrival_conflicts_only_with_a_different_version_than_its_base() -> None:
    assert not synclogic.crossed(None, None)
    assert not synclogic.crossed(F1, F1)  # we have what the sender replaced: apply
    assert synclogic.crossed(F2, F1)  # we changed it too
    assert not synclogic.crossed(D, None)  # folders never conflict


def _tree(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("hello\n")
    (root / "top.txt").write_text("top\n")
    (root / "link").symlink_to("/etc/passwd")


def _transfer(src: Path, dst: Path, rels: list[str], sent: Known, applier: Applier) -> None:
    buf = io.BytesIO()
    synclogic.send_entries(buf, str(src), rels, sent)
    buf.seek(0)
    while buf.tell() < len(buf.getvalue()):
        applier.put(synclogic.read_frame(buf), buf)


def test_entries_arrive_with_content_bits_times_and_links_as_links(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    (src / "d" / "a.txt").chmod(0o600)
    dst.mkdir()
    known = Known()
    _transfer(src, dst, ["d", "d/a.txt", "top.txt", "link"], Known(), Applier(str(dst), "guest", known))
    assert (dst / "d" / "a.txt").read_text() == "hello\n"
    assert (dst / "d" / "a.txt").stat().st_mode & 0o777 == 0o600
    assert (dst / "d" / "a.txt").stat().st_mtime_ns == (src / "d" / "a.txt").stat().st_mtime_ns
    assert os.readlink(dst / "link") == "/etc/passwd"
    # what was applied is known: the receiver's watcher takes it for an echo and does not send it back
    assert synclogic.manifest(str(dst)) == synclogic.manifest(str(src))
    for rel, sig in synclogic.manifest(str(dst)).items():
        assert known.is_echo(rel, sig), rel


def test_a_link_in_the_tree_is_never_followed_by_what_arrives(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "escape").symlink_to(outside)  # a container made a link to a folder outside the share
    applier = Applier(str(dst), "host", Known())
    buf = io.BytesIO()
    synclogic.write_frame(
        buf, {"op": "put", "path": "escape/pwned", "sig": ["f", 2, 1, 0o644], "size": 2}, b"x\n"
    )
    buf.seek(0)
    with pytest.raises(OSError):
        applier.put(synclogic.read_frame(buf), buf)
    assert not (outside / "pwned").exists()
    for bad in ("../x", "/etc/passwd", "a/../../x", "."):
        with pytest.raises(ValueError):
            synclogic.check_rel(bad)


def test_a_crossing_change_keeps_both_versions_on_the_receiver(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "f.txt").write_text("ours\n")
    os.utime(dst / "f.txt", ns=(10**18, 10**18))  # ours is newer
    ours = synclogic.sig_of(str(dst), "f.txt")
    applier = Applier(str(dst), "host", Known({"f.txt": ("f", 4, 5, 0o644)}))
    buf = io.BytesIO()
    header = {
        "op": "put",
        "path": "f.txt",
        "sig": ["f", 7, 10**9, 0o644],
        "size": 7,
        "base": ["f", 4, 5, 0o644],
    }
    synclogic.write_frame(buf, header, b"theirs\n")
    buf.seek(0)
    assert applier.put(synclogic.read_frame(buf), buf) == "conflict"
    assert (dst / "f.txt").read_text() == "ours\n" and synclogic.sig_of(str(dst), "f.txt") == ours
    kept = [n for n in os.listdir(dst) if n.startswith("f.txt.conflict-guest-")]
    assert len(kept) == 1 and (dst / kept[0]).read_text() == "theirs\n"


def test_a_deletion_spares_a_file_changed_here(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    (dst / "d").mkdir(parents=True)
    (dst / "d" / "old.txt").write_text("old\n")
    (dst / "d" / "new.txt").write_text("changed here\n")
    known = Known({"d": ("d", 0o755), "d/old.txt": synclogic.sig_of(str(dst), "d/old.txt")})
    Applier(str(dst), "guest", known).delete("d")
    assert sorted(os.listdir(dst / "d")) == ["new.txt"]


# -- the guest process over pipes: inotify, echo suppression ---------------------------------------------
def test_the_guest_side_reports_changes_once_and_not_its_own_writes(tmp_path: Path) -> None:
    store, src = tmp_path / "store", tmp_path / "src"
    _tree(src)
    agent_dir = Path(synclogic.__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-m", "pymachine_agent.syncshare", "--store", str(store),
         "--path", str(tmp_path / "mnt"), "--uid", str(os.getuid()), "--gid", str(os.getgid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=agent_dir,
    )  # fmt: skip
    got: list[dict] = []

    def read() -> None:
        while True:
            try:
                h = synclogic.read_frame(child.stdout)  # type: ignore[arg-type]
            except (EOFError, ValueError):
                return
            if h.get("size"):
                synclogic.read_exact(child.stdout, h["size"])  # type: ignore[arg-type]
            got.append(h)

    threading.Thread(target=read, daemon=True).start()
    try:
        _wait(lambda: got and got[0]["op"] == "manifest")
        synclogic.send_entries(child.stdin, str(src), ["d", "d/a.txt", "top.txt", "link"], Known())  # type: ignore[arg-type]
        synclogic.write_frame(child.stdin, {"op": "pull", "paths": []})  # type: ignore[arg-type]
        child.stdin.flush()  # type: ignore[union-attr]
        _wait(lambda: any(h["op"] == "pulled" for h in got))
        (store / "guest.txt").write_text("g\n")
        _wait(lambda: any(h.get("path") == "guest.txt" for h in got))
        time.sleep(0.5)  # what the host sent must not come back (an echo would show up in this window)
        assert [h.get("path") for h in got if h["op"] == "put"] == ["guest.txt"]
        (store / "guest.txt").rename(store / "moved.txt")  # a rename crosses as a move, not as content
        _wait(
            lambda: any(h["op"] == "move" and (h["path"], h["to"]) == ("guest.txt", "moved.txt") for h in got)
        )
        assert [h.get("path") for h in got if h["op"] in ("put", "delete")] == ["guest.txt"]
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(10)


class _RacingLibc:
    """libc whose inotify_add_watch of `racy` first makes a folder in it: a container's `mkdir -p` that lands
    between the watcher's look at a new folder and its watch on it (what a loaded TCG guest hit)."""

    def __init__(self, libc, racy: Path) -> None:  # type: ignore[no-untyped-def]
        self.libc, self.racy = libc, racy

    def inotify_add_watch(self, fd: int, path: bytes, mask: int) -> int:
        if os.fsdecode(path) == str(self.racy) and not (self.racy / "inner").exists():
            (self.racy / "inner").mkdir()
        return self.libc.inotify_add_watch(fd, path, mask)


def test_a_folder_made_while_its_new_parent_is_being_watched_is_watched_too(tmp_path: Path) -> None:
    from pymachine_agent.syncshare import Inotify

    watcher = Inotify(str(tmp_path))
    watcher.add_tree("")
    watcher.libc = _RacingLibc(watcher.libc, tmp_path / "newdir")
    (tmp_path / "newdir").mkdir()
    seen = watcher.read(5.0)  # newdir's event: watched, and `inner` is made during that
    assert "newdir" in seen
    (tmp_path / "newdir" / "inner" / "y.txt").write_text("x\n")
    deadline = time.monotonic() + 5.0
    while "newdir/inner/y.txt" not in seen and time.monotonic() < deadline:
        seen |= watcher.read(0.2)
    assert "newdir/inner/y.txt" in seen, seen


def _wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- configuration ----------------------------------------------------------------------------------------
def test_sync_in_the_mount_grammar_and_old_configs_still_load(tmp_path: Path) -> None:
    assert cfgmod.parse_share(f"{tmp_path}:sync") == cfgmod.Share(str(tmp_path), sync=True)
    problems: list[cfgmod.Problem] = []
    shares = cfgmod.check_shares([cfgmod.Share(str(tmp_path), sync=True)], problems)
    assert shares == [cfgmod.Share(str(tmp_path), False, True)] and not problems
    cfgmod.check_shares([cfgmod.Share(str(tmp_path), True, True)], problems)
    assert problems and "read-write" in str(problems[0])
    assert cfgmod.Share.from_json({"path": "/x", "readonly": True}) == cfgmod.Share("/x", True, False)


def test_the_guest_asks_no_change_events_for_a_sync_share() -> None:
    """Its copy is on the VM's disk, where inotify fires by itself; a live share's bind source is watched."""
    from pymachine_agent.runtime.spec import Mount
    from pymachine_agent.shares import Share, Shares

    rules = Shares(
        [Share("/s", transport="sync"), Share("/l", transport="virtiofs")], is_mount=lambda p: True
    )
    mounts = [Mount("bind", "/a", "/s/app"), Mount("bind", "/b", "/l/app")]
    assert rules.watched(mounts) == {"/l/app"}


def test_a_change_lost_with_the_channel_is_not_taken_for_agreed(tmp_path: Path) -> None:
    """The host sent a new file and the channel died before the guest applied it (a link drop under load did
    this in the bench: 644 of 1,000 new host files were then deleted on the host as 'deleted in the guest').
    The base on disk keeps only what the guest confirmed, so the next start copies the file again."""
    from pymachine.hostvm.hostagent.syncshare import SyncShare

    share = tmp_path / "share"
    share.mkdir()
    (share / "new.txt").write_text("new\n")
    (share / "old.txt").write_text("old\n")
    s = SyncShare(str(share), tmp_path / "state", lambda: None)
    old = synclogic.sig_of(str(share), "old.txt")
    s.known.set("old.txt", old)
    s.live, s.out = True, io.BytesIO()  # type: ignore[assignment]
    s.flush({"new.txt", "old.txt"})  # new.txt sent; old.txt is an echo
    assert s.known.is_echo("new.txt", synclogic.sig_of(str(share), "new.txt"))
    s.save_base()
    base = s.load_base()
    assert base == {"old.txt": old}
    host = synclogic.manifest(str(share))
    p = plan(host, {"old.txt": old}, base)
    assert p.push == ["new.txt"] and not p.delete_host
    # once the guest answers the mark that followed it, it is agreed
    s.confirm(s.mark)
    s.save_base()
    assert s.load_base() == host


def test_the_last_state_reported_is_the_one_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader thread reports "syncing" (a mark arrived) while start() sets "in sync" and reports too: the
    older snapshot, however slow its write, must never land over the newer one (CI: `mount list` stayed at
    "syncing" with the copy in place)."""
    from pymachine.hostvm import store
    from pymachine.hostvm.hostagent import syncshare

    share_dir = tmp_path / "proj"
    share_dir.mkdir()
    real_write = store.write_json

    def slow_for_syncing(path: Path, data: object) -> None:
        if isinstance(data, dict) and any(v.get("state") == "syncing" for v in data.values()):
            time.sleep(0.3)  # the older writer is descheduled between its snapshot and its rename
        real_write(path, data)

    monkeypatch.setattr(syncshare.store, "write_json", slow_for_syncing)
    shares = syncshare.SyncShares([str(share_dir)], tmp_path, lambda **_: None)
    try:
        share = shares.shares[str(share_dir)]
        share.state = "syncing"
        older = threading.Thread(target=share.report)
        older.start()
        time.sleep(0.05)  # the older snapshot is taken
        share._set("in sync")
        older.join()
        assert store.read_json(tmp_path / "sync-state.json", {})[str(share_dir)]["state"] == "in sync"
    finally:
        shares.stop()
