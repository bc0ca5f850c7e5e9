"""Issue 13, virtiofs with cache=always made coherent: the pure parts of the guest's revalidation (which mount
serves a path), the `touch` flag of a change, and the guest's order: every changed path taken afresh before
any chmod, deleted and flood (`touch: false`) paths too. The kernel side is proven on a booted machine by
tests/vm/test_shares_coherence.py; the read-only bind by tests/privileged/test_shares_revalidate.py."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from pymachine_agent import protocol
from pymachine_agent.fsevents import ChangeMirror
from pymachine_agent.revalidate import plan

TABLE = [
    ("/", "ext4"),
    ("/run", "tmpfs"),
    ("/home/me", "virtiofs"),
    ("/home/me/src/app", "ext4"),  # a sync share's copy bound inside the home share
    ("/tmp", "virtiofs"),
    ("/tmp", "tmpfs"),  # mounted on top later: /tmp is not the share any more
    ("/var/tmp/pm", "virtiofs"),
]


def test_plan_groups_paths_by_the_virtiofs_mount_that_serves_them() -> None:
    got = plan(
        ["/home/me/proj/a.txt", "/home/me/proj/", "/home/me", "/home/me/src/app/x", "/home/me/src", "/etc/x"],
        TABLE,
    )
    assert got == {"/home/me": {"proj/a.txt", "proj", ".", "src"}}


def test_plan_leaves_out_what_lies_on_top_and_look_alike_prefixes() -> None:
    assert plan(["/tmp/a", "/var/tmp/pmx/a", "/var/tmp/pm/../pmx/b"], TABLE) == {}
    assert plan(["/var/tmp/pm/a/../b"], TABLE) == {"/var/tmp/pm": {"b"}}
    assert plan([], TABLE) == {}


def test_a_change_says_touch_only_when_it_is_not_to_be_touched(tmp_path: Path) -> None:
    st = os.lstat(tmp_path)
    assert protocol.fs_change("/a", st) == {"path": "/a", "exists": True, "mode": stat.S_IMODE(st.st_mode)}
    assert protocol.fs_change("/a", None, touch=False) == {"path": "/a", "exists": False, "touch": False}
    ok = [protocol.fs_change("/a", st, touch=False), {"path": "/b", "exists": False}]
    assert protocol.parse_fs_changes({"changes": ok}) == ok
    with pytest.raises(ValueError):
        protocol.parse_fs_changes({"changes": [{"path": "/a", "exists": False, "touch": "no"}]})


def test_every_watched_path_is_taken_afresh_before_the_chmods(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "edited").write_text("x")
    (proj / "flooded").write_text("x")
    os.chmod(proj / "edited", 0o600)
    os.chmod(proj / "flooded", 0o600)
    order: list[object] = []

    def fresh(paths: list[str]) -> int:
        # nothing chmodded yet when the names are taken afresh
        order.append(("fresh", sorted(paths), stat.S_IMODE(os.stat(proj / "edited").st_mode)))
        return len(paths)

    mirror = ChangeMirror(lambda event: None, fresh=fresh)
    mirror.refresh(lambda: [str(proj)])
    changes = [
        {"path": str(proj / "edited"), "exists": True, "mode": 0o644},
        {"path": str(proj / "flooded"), "exists": True, "mode": 0o644, "touch": False},
        {"path": str(proj / "deleted"), "exists": False},
        {"path": str(tmp_path / "elsewhere"), "exists": True, "mode": 0o644},
    ]
    assert mirror.apply(changes) == {"applied": 1, "skipped": 3}
    watched = sorted(str(proj / n) for n in ("edited", "flooded", "deleted"))
    assert order == [("fresh", watched, 0o600)]  # not the path outside the watch set
    assert stat.S_IMODE(os.stat(proj / "edited").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(proj / "flooded").st_mode) == 0o600  # touch: false is not chmodded
    assert mirror.refreshed == 3


def test_a_folder_no_container_binds_any_more_stays_watched_while_the_guest_may_cache_it() -> None:
    """`docker run -v P` twice with a host edit between: what the first container read stays in the VM's
    virtiofs caches for the cache's timeout, so the host keeps watching P that long (not where no virtiofs
    serves P)."""
    sent: list[list[str]] = []
    on_virtiofs = lambda ps: [p for p in ps if p != "/b"]  # noqa: E731
    mirror = ChangeMirror(lambda e: sent.append(e["paths"]), linger=0.5, cached=on_virtiofs)
    mirror.refresh(lambda: ["/a", "/b"])
    mirror.refresh(lambda: [])
    assert sent == [["/a", "/b"], ["/a"]]  # /b is on no virtiofs share: nothing to keep
    mirror.refresh(lambda: ["/a"])  # bound again meanwhile: no change to announce
    mirror.refresh(lambda: [])
    deadline = time.monotonic() + 10
    while sent[-1] != [] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent == [["/a", "/b"], ["/a"], []]


def test_the_guests_linger_is_the_hosts_cache_timeout() -> None:
    from pymachine.hostvm import shares
    from pymachine_agent import fsevents

    assert fsevents.LINGER_S == shares.CACHE_TIMEOUT_S
