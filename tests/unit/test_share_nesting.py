"""A sync share inside a live share (hostvm/share_nesting.py): which nestings are allowed and refused, the
order the save's quiesce takes them off in, the guest's bind rules and the host's change events around them.
The whole path in a booted machine is tests/vm/test_shares_sync_vm.py (its machine nests its sync share)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pymachine.hostvm import paths, savestate, share_hotplug, store
from pymachine.hostvm.config import Problem, Share, check_shares
from pymachine.hostvm.domain import ShareDevice
from pymachine.hostvm.share_nesting import nested_syncs
from pymachine_agent import syncshare as guest_sync
from pymachine_agent.shares import Share as GuestShare
from pymachine_agent.shares import Shares


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "src" / "app" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "other").mkdir(parents=True)
    return tmp_path


def _check(shares: list[Share]) -> tuple[list[Share], list[str]]:
    problems: list[Problem] = []
    out = check_shares(shares, problems)
    return out, [p.message for p in problems]


def test_a_sync_share_inside_a_read_write_live_share_is_allowed_in_either_order(home: Path) -> None:
    app = str(home / "src" / "app")
    for shares in ([Share(str(home)), Share(app, sync=True)], [Share(app, sync=True), Share(str(home))]):
        out, problems = _check(shares)
        assert problems == [] and len(out) == 2
    # two sync shares side by side in one live share: fine too
    _out, problems = _check(
        [Share(str(home)), Share(app, sync=True), Share(str(home / "src" / "other"), sync=True)]
    )
    assert problems == []


@pytest.mark.parametrize(
    ("first", "second", "said"),
    [
        # a live share inside a sync share: the copy's bind would hide it
        (Share("{app}", sync=True), Share("{app}/lib"), "a live share inside a sync share"),
        (Share("{app}/lib"), Share("{app}", sync=True), "a live share inside a sync share"),
        (Share("{app}", sync=True), Share("{app}/lib", sync=True), "a sync share inside another sync share"),
        # the sync writes containers' changes back: a read-only share would not stay read-only
        (Share("{home}", readonly=True), Share("{app}", sync=True), "inside a read-only share would write"),
        (Share("{home}"), Share("{app}"), "overlaps the share"),  # live in live: as before
        (Share("{app}"), Share("{app}", sync=True), "is already shared"),
    ],
)
def test_nestings_that_cannot_work_are_refused_saying_why(
    home: Path, first: Share, second: Share, said: str
) -> None:
    def fill(s: Share) -> Share:
        return Share(s.path.format(home=home, app=home / "src" / "app"), s.readonly, s.sync)

    out, problems = _check([fill(first), fill(second)])
    assert len(out) == 1 and len(problems) == 1 and said in problems[0], problems


def test_nested_syncs_are_listed_deepest_first_with_the_share_that_holds_them() -> None:
    shares = [Share("/h"), Share("/h/a", sync=True), Share("/h/b/c/d", sync=True), Share("/x", sync=True)]
    assert nested_syncs(shares) == [("/h/b/c/d", "/h"), ("/h/a", "/h")]


def test_the_quiesce_takes_the_sync_bind_off_before_the_share_that_holds_it() -> None:
    dev = ShareDevice(tag="pm0", path="/h", readonly=False, transport="virtiofs", socket="/s")
    script = savestate.quiesce_script([dev], ["/h/app"])
    inner, outer = script.index("umount /h/app"), script.index("umount /h ")
    assert inner < outer, script
    # a busy outer share puts the copy back where it was (after the outer share is mounted again)
    undo = script[outer:].split("\n")[1]
    assert "mount --bind /var/lib/pymachine/sync/" in undo and "remount,bind,nosuid,nodev /h/app" in undo
    # with no device share (sshfs, which the host agent unmounts lazily afterwards) the bind still comes off
    assert "umount /h/app" in savestate.quiesce_script([], ["/h/app"])
    assert savestate.quiesce_script([], []) == "sync"
    # a failed save mounts the share again, then the copy over it
    again = savestate.remount_script([dev], inner=["/h/app"])
    assert again.index("mount -t virtiofs") < again.index("mount --bind"), again


def test_the_guest_finds_the_deepest_share_for_a_bind_source() -> None:
    rules = Shares(
        [GuestShare("/h", False, "virtiofs"), GuestShare("/h/app", False, "sync")], is_mount=lambda p: True
    )
    assert rules.find("/h/app/src").transport == "sync"  # type: ignore[union-attr]
    assert rules.find("/h/other").transport == "virtiofs"  # type: ignore[union-attr]
    # change events: the home share is watched, the sync copy not (inotify fires on the VM's disk)
    from pymachine_agent.runtime.spec import Mount

    binds = [Mount(type="bind", source="/h", target="/h"), Mount(type="bind", source="/h/app", target="/app")]
    assert rules.watched(binds) == {"/h"}


def test_the_guest_binds_a_nested_copy_only_once_the_outer_share_is_mounted(tmp_path: Path) -> None:
    store_dir, path = tmp_path / "store", tmp_path / "outer" / "app"
    store_dir.mkdir()
    started = time.monotonic()
    error = guest_sync.bind_mount(str(store_dir), str(path), outer=str(tmp_path / "outer"), wait=0.3)
    assert f"the share {tmp_path / 'outer'} that holds {path} is not mounted" in error
    assert time.monotonic() - started >= 0.3  # it waited for it
    assert not path.exists()  # nothing made under a share that is not there
    assert not guest_sync.share_mounted("/")  # the guest's own root is no share


def test_mount_add_of_an_sshfs_share_that_holds_a_sync_share_waits_for_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "h"))
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    store.write_json(mp.state, {"share_transport": "sshfs", "shares": []})
    store.write_json(
        mp.config,
        {"shares": [{"path": "/home/u", "readonly": False}, {"path": "/home/u/app", "sync": True}]},
    )
    change = share_hotplug.apply("dev", Share("/home/u"), add=True, running=True)
    assert change.when == "restart" and "holds the sync share /home/u/app" in change.problem


def test_the_host_sends_no_change_events_under_a_sync_share(home: Path) -> None:
    pytest.importorskip("watchdog")
    from pymachine.hostvm.hostagent.fswatch import FsWatcher

    sent: list[str] = []
    app = str(home / "src" / "app")
    w = FsWatcher(
        lambda changes: sent.extend(c["path"] for c in changes), lambda: [str(home)], skipped=lambda: [app]
    )
    try:
        w.set_paths([str(home)])
        (home / "src" / "app" / "lib" / "synced.txt").write_text("the sync carries this\n")
        (home / "src" / "app" / "top.txt").write_text("and this\n")
        (home / "src" / "other" / "live.txt").write_text("live\n")
        deadline = time.monotonic() + 10
        while str(home / "src" / "other" / "live.txt") not in sent and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # (the same batch window again, for anything under app to come late)
        assert str(home / "src" / "other" / "live.txt") in sent, sent
        assert not [p for p in sent if p == app or p.startswith(app + os.sep)], sent
    finally:
        w.stop()


def test_the_host_agent_learns_which_live_share_holds_each_sync_share(tmp_path: Path) -> None:
    from pymachine.hostvm.hostagent.syncshare import guest_command, machine_sync_outers

    config = tmp_path / "config.json"
    config.write_text(
        '{"shares": [{"path": "/h", "readonly": false}, {"path": "/h/app", "sync": true},'
        ' {"path": "/x", "sync": true}]}'
    )
    assert machine_sync_outers(config) == {"/h/app": "/h"}
    assert "--outer /h" in guest_command("/h/app", 1000, 1000, outer="/h")
    assert "--outer" not in guest_command("/x", 1000, 1000)
