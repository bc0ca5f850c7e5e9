"""Issue 13, the host agent's change watcher (hostvm/hostagent/fswatch.py) on this host's real inotify through
watchdog: what it watches, what it sends, how the guest's echo stops, and its bounds."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("watchdog")

from pymachine.hostvm.hostagent.fswatch import FsWatcher  # noqa: E402


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        self.warnings: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send(self, changes: list[dict]) -> None:
        with self.lock:
            self.batches.append(changes)

    def warn(self, message: str, hint: str) -> None:
        self.warnings.append((message, hint))

    def paths(self) -> list[str]:
        with self.lock:
            return [c["path"] for b in self.batches for c in b]

    def wait_for(self, path: str, exists: bool = True, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [c for b in self.batches for c in b if c["path"] == path and c["exists"] == exists]
            if found:
                return found[-1]
            time.sleep(0.01)
        raise AssertionError(f"no change sent for {path}; sent: {self.paths()}")


@pytest.fixture
def share(tmp_path: Path) -> Path:
    (tmp_path / "share" / "proj" / "src").mkdir(parents=True)
    (tmp_path / "share" / "elsewhere").mkdir()
    return tmp_path / "share"


def _watcher(rec: Recorder, share: Path, **kw: object) -> FsWatcher:
    return FsWatcher(rec.send, lambda: [str(share)], warn=rec.warn, **kw)  # type: ignore[arg-type]


def test_an_edit_is_sent_with_its_mode_and_the_guest_echo_stops(share: Path) -> None:
    rec = Recorder()
    w = _watcher(rec, share)
    try:
        w.set_paths([str(share / "proj")])
        f = share / "proj" / "src" / "app.py"
        f.write_text("print(1)\n")
        change = rec.wait_for(str(f))
        st = f.stat()
        assert change == {
            "path": str(f),
            "exists": True,
            "mode": stat.S_IMODE(st.st_mode),
        }
        # a created name also sends its folder (all a deletion can touch in the guest)
        rec.wait_for(str(share / "proj" / "src"))
        # the guest sets the same mode: an attribute event here, which must not be sent back again
        time.sleep(0.3)
        sent = len(rec.paths())
        os.chmod(f, change["mode"])
        time.sleep(0.5)
        assert len(rec.paths()) == sent, rec.paths()[sent:]
        assert w.snapshot()["echoes"] >= 1
        # outside the watched bind source nothing is sent
        (share / "elsewhere" / "x").write_text("x")
        f.unlink()
        gone = rec.wait_for(str(f), exists=False)
        assert gone == {"path": str(f), "exists": False}
        assert str(share / "elsewhere" / "x") not in rec.paths()
    finally:
        w.stop()


def test_a_file_bind_is_watched_through_its_folder_for_its_own_name_only(share: Path) -> None:
    rec = Recorder()
    w = _watcher(rec, share)
    try:
        conf = share / "proj" / "app.conf"
        conf.write_text("a\n")
        w.set_paths([str(conf)])
        (share / "proj" / "other.txt").write_text("o")
        conf.write_text("b\n")
        rec.wait_for(str(conf))
        time.sleep(0.2)
        assert set(rec.paths()) == {str(conf)}
    finally:
        w.stop()


def test_a_bind_source_named_through_a_link_reports_the_named_path(share: Path, tmp_path: Path) -> None:
    """macOS's /tmp is a link to /private/tmp: the watcher sees real paths, the guest knows the named ones."""
    rec = Recorder()
    (share / "alias").symlink_to(share / "proj")
    w = _watcher(rec, share)
    try:
        w.set_paths([str(share / "alias")])
        (share / "proj" / "f").write_text("x")
        rec.wait_for(str(share / "alias" / "f"))
        assert not [p for p in rec.paths() if p.startswith(str(share / "proj"))]
    finally:
        w.stop()


def test_a_request_is_applied_off_the_callers_thread_newest_set_wins(share: Path) -> None:
    rec = Recorder()
    w = _watcher(rec, share)
    try:
        w.request([str(share / "elsewhere")])
        w.request([str(share / "proj")])
        deadline = time.monotonic() + 5
        while w.watched() != [str(share / "proj")] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.watched() == [str(share / "proj")]
    finally:
        w.stop()


def test_the_set_is_replaced_and_paths_outside_the_shares_are_refused(share: Path, tmp_path: Path) -> None:
    rec = Recorder()
    w = _watcher(rec, share)
    try:
        outside = tmp_path / "not-shared"
        outside.mkdir()
        link = share / "link-out"
        link.symlink_to(outside)
        w.set_paths([str(share / "proj"), str(outside), str(link)])
        assert w.watched() == [str(share / "proj")]
        assert {m for m, _h in rec.warnings} == {
            f"not watching {outside}: it is not in a share of this machine",
            f"not watching {link}: it is not in a share of this machine",
        }
        (outside / "secret").write_text("s")
        w.set_paths([])
        assert w.watched() == []
        (share / "proj" / "late").write_text("l")
        time.sleep(0.4)
        assert rec.paths() == []
    finally:
        w.stop()


def test_a_tree_over_the_watch_budget_is_refused_with_the_sysctl(share: Path) -> None:
    rec = Recorder()
    for i in range(5):
        (share / "proj" / "src" / f"d{i}").mkdir()
    w = _watcher(rec, share, dir_budget=4)
    try:
        w.set_paths([str(share / "proj")])
        assert w.watched() == []
        message, hint = rec.warnings[0]
        assert message == f"not watching {share / 'proj'}: more than 4 folders left in the inotify budget"
        assert "sysctl fs.inotify.max_user_watches=" in hint
    finally:
        w.stop()
    rec2 = Recorder()
    w2 = _watcher(rec2, share, max_roots=1)
    try:
        w2.set_paths([str(share / "proj"), str(share / "elsewhere")])
        assert len(w2.watched()) == 1 and "bind mounts are watched already" in rec2.warnings[0][0]
    finally:
        w2.stop()


def test_a_flood_is_sent_as_its_folders(share: Path) -> None:
    """npm install in a container writes thousands of files into the share: each would come back to the guest
    as a chmod. Past `max_batch` paths a batch's events are carried by their folders instead; the files go
    with `touch: false` (no chmod; the guest only takes them afresh)."""
    rec = Recorder()
    w = _watcher(rec, share, max_batch=20, coalesce=1.0)
    try:
        w.set_paths([str(share / "proj")])
        mods = share / "proj" / "node_modules"
        mods.mkdir()
        time.sleep(0.5)
        for pkg in ("a", "b"):
            (mods / pkg).mkdir()
            for i in range(30):
                (mods / pkg / f"f{i}.js").write_text("x")
        rec.wait_for(str(mods / "b"))
        time.sleep(0.5)
        with rec.lock:
            sent = [c for b in rec.batches for c in b]
        touched = {c["path"] for c in sent if c.get("touch", True)}
        assert {str(mods / "a"), str(mods / "b")} <= touched
        assert not [p for p in touched if p.endswith(".js")], sorted(touched)
        # the files still go, to be taken afresh by the guest's virtiofs caches, without a chmod each
        quiet = {c["path"] for c in sent if not c.get("touch", True)}
        assert {str(mods / p / f"f{i}.js") for p in ("a", "b") for i in range(30)} <= quiet
        assert w.snapshot()["collapsed"] >= 1
    finally:
        w.stop()


def test_without_watchdog_the_agent_says_so_and_goes_on(share: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "watchdog.observers", None)  # `import` of it now raises ImportError
    rec = Recorder()
    w = _watcher(rec, share)
    try:
        w.set_paths([str(share / "proj")])
        assert w.watched() == []
        assert rec.warnings == [
            (
                f"not watching {share / 'proj'}: the watchdog library is not installed",
                "pip install watchdog (Debian: apt install python3-watchdog), then restart the machine",
            )
        ]
    finally:
        w.stop()
