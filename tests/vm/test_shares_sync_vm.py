"""Sync shares in a booted machine (`--mount PATH:sync`): the folder's copy on the VM's disk, bind-mounted at
the same path, kept in sync both ways by the host agent (hostvm/hostagent/syncshare.py) and the guest side
(pymachine_agent/syncshare.py). One machine for the module (a sync share is set at start), as a Docker Desktop
user has it: the sync share lies inside a live share (virtiofs, standing in for the default home share;
share_nesting.py), and the VM binds the copy over that sub-path, so whatever a container sees of the folder,
through either share, came through the sync. libvirt, so that the last test's stop saves the machine with the
virtiofs share unplugged (direct QEMU cannot) and its start resumes it: the quiesce takes the copy's bind off
first, and the resumed guest binds it again over the share once that is mounted."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import gitkit
from support.hostagent_vm import VmMachine, booted_machine, env_of
from support.inotify import events, inotify_watch_binary
from support.machines import unique_name
from support.poll import until

pytestmark = pytest.mark.vm
IMAGE = "pymachine/busybox"
OWNER = (4321, 4321)  # the share's owner on the host: not root, not anyone the guest knows
DEADLINE = 30.0  # bound on one change crossing over (a hang guard under TCG and load, not a speed claim)
RESTART = 180.0  # bound on a new guest side's start and merge (a Python start and a walk in a loaded TCG VM)


@dataclass
class Synced:
    m: VmMachine
    proj: Path
    live: Path  # the live share that holds proj

    def sh(self, script: str, check: bool = True) -> str:
        return self.m.docker(
            "run", "--rm", "-v", f"{self.proj}:/app", IMAGE, "sh", "-c", script, check=check
        ).stdout

    def guest_has(self, rel: str, text: str) -> bool:
        out = self.sh(f"cat /app/{rel} 2>/dev/null; true")
        return out == text


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, *OWNER, follow_symlinks=False)


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    base = tmp_path_factory.mktemp("sync")
    live = base / "live"
    proj = live / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "pre.txt").write_text("before start\n")
    (proj / "sub" / "deep.txt").write_text("deep\n")
    (proj / "gone.txt").write_text("deleted while stopped\n")
    (proj / "link").symlink_to("/etc/hostname")  # a link stays a link, never followed
    for p in (
        proj,
        proj / "sub",
        proj / "pre.txt",
        proj / "sub" / "deep.txt",
        proj / "gone.txt",
        proj / "link",
    ):
        _own(p)
    (live / "beside.txt").write_text("live\n")
    mounts = [str(live), f"{proj}:sync"]
    with (
        booted_machine(
            base, unique_name("sync"), driver="libvirt", home_mount=False, mounts=mounts
        ) as machine,
        env_of(machine),
    ):
        yield Synced(machine, proj, live)


def test_the_copy_is_made_at_start_and_bound_at_the_same_path(synced: Synced) -> None:
    out = synced.sh("cat /app/pre.txt /app/sub/deep.txt; readlink /app/link; stat -c '%u:%g' /app/pre.txt")
    assert out == f"before start\ndeep\n/etc/hostname\n{OWNER[0]}:{OWNER[1]}\n"
    # on the VM's own disk, bound nosuid,nodev at the host path
    status, mounts, _ = synced.m.ssh(f"findmnt -rn -M {synced.proj} -o FSTYPE,OPTIONS")
    assert status == 0 and mounts.split()[0] == b"ext4", mounts
    assert b"nosuid" in mounts and b"nodev" in mounts
    listing = synced.m.pymachine("mount", "list", synced.m.name).stdout
    assert "sync" in listing and "in sync" in listing, listing


def test_a_host_edit_reaches_the_container_and_fires_inotify_there(synced: Synced) -> None:
    watcher = inotify_watch_binary()
    if watcher is None:
        pytest.skip("no gcc with a static libc to build the inotify watcher")
    tools = synced.proj / ".tools"
    tools.mkdir()
    shutil.copy(watcher, tools / "watch")
    (tools / "watch").chmod(0o755)
    (synced.proj / "app.py").write_text("v1\n")
    until(lambda: synced.guest_has("app.py", "v1\n"), DEADLINE, "app.py in the guest")
    until(lambda: synced.sh("test -x /app/.tools/watch && echo ok; true") == "ok\n", DEADLINE, "the watcher")
    cid = synced.m.docker(
        "run", "-d", "-v", f"{synced.proj}:/app", IMAGE, "/app/.tools/watch", "/app"
    ).stdout.strip()
    try:
        until(lambda: "watching" in synced.m.docker("logs", cid).stdout, 120, "the watcher in the container")
        start = time.monotonic()
        (synced.proj / "app.py").write_text("v2\n")
        until(
            lambda: any(n == "app.py" for _m, n in events(synced.m.docker("logs", cid).stdout)),
            DEADLINE,
            "an inotify event for app.py in the container",
        )
        print(f"host edit → inotify in the container: {time.monotonic() - start:.2f} s")
        assert synced.guest_has("app.py", "v2\n")
    finally:
        synced.m.docker("rm", "-f", cid, check=False)


def test_a_container_write_reaches_the_host_owned_by_the_share_owner(synced: Synced) -> None:
    synced.sh("echo made > /app/made.txt && mkdir -p /app/newdir/inner && echo x > /app/newdir/inner/y.txt")
    made = synced.proj / "made.txt"
    until(lambda: made.exists() and made.read_text() == "made\n", DEADLINE, "made.txt on the host")
    y = synced.proj / "newdir" / "inner" / "y.txt"
    until(lambda: y.exists() and y.read_text() == "x\n", DEADLINE, "newdir/inner/y.txt on the host")
    if os.geteuid() == 0:
        for p in (made, y, y.parent, y.parent.parent):
            assert (p.stat().st_uid, p.stat().st_gid) == OWNER, p
    # a link made in the container arrives as a link, never followed
    synced.sh("ln -s /etc/shadow /app/guest-link")
    link = synced.proj / "guest-link"
    until(lambda: link.is_symlink(), DEADLINE, "the link on the host")
    assert os.readlink(link) == "/etc/shadow"


def test_rename_and_delete_both_ways(synced: Synced) -> None:
    p = synced.proj
    (p / "h-old.txt").write_text("renamed on the host\n")
    (p / "h-del.txt").write_text("deleted on the host (a size of its own)\n")
    until(
        lambda: synced.guest_has("h-del.txt", "deleted on the host (a size of its own)\n"),
        DEADLINE,
        "h-del.txt in the guest",
    )
    until(lambda: synced.guest_has("h-old.txt", "renamed on the host\n"), DEADLINE, "h-old.txt in the guest")
    inode = synced.sh("stat -c %i /app/h-old.txt")
    (p / "h-old.txt").rename(p / "h-new.txt")
    (p / "h-del.txt").unlink()
    until(
        lambda: synced.sh("ls /app | grep '^h-'") == "h-new.txt\n", DEADLINE, "the host's rename and delete"
    )
    # crossed as a rename (synclogic.moves): the guest renamed its file, it did not write the content again
    assert synced.sh("stat -c %i /app/h-new.txt") == inode
    synced.sh(
        "echo c > /app/c-old.txt && echo dd > /app/c-del.txt && mkdir -p /app/c-dir/x "
        "&& echo z > /app/c-dir/x/z"
    )
    until(
        lambda: all((p / n).exists() for n in ("c-dir/x/z", "c-del.txt", "c-old.txt")),
        DEADLINE,
        "container files",
    )
    inode = (p / "c-old.txt").stat().st_ino
    synced.sh("mv /app/c-old.txt /app/c-new.txt && rm /app/c-del.txt && rm -r /app/c-dir")
    until(
        lambda: sorted(n for n in os.listdir(p) if n.startswith("c-")) == ["c-new.txt"],
        DEADLINE,
        "the container's rename and deletes on the host",
    )
    assert (p / "c-new.txt").read_text() == "c\n" and (p / "c-new.txt").stat().st_ino == inode


def test_a_git_repository_made_on_the_host_is_clean_in_a_container(synced: Synced, tmp_path: Path) -> None:
    gitkit.host_repo(synced.proj / "repo", tmp_path)
    script = gitkit.status_script(synced.proj / ".gitkit", "/app/.gitkit", "/app/repo")
    # polled: the copy arrives file by file; once it is complete, git finds the work tree clean
    until(lambda: synced.sh(script) == "rc=0\n", DEADLINE * 4, "a clean git status in the container")


def _sync_pid(synced: Synced) -> str:
    """The guest side's pid ('' while there is none)."""
    _status, out, _ = synced.m.ssh("pgrep -f '^python3 -m pymachine_agent.syncshare' | head -n1")
    return out.decode().strip()


def test_a_conflict_keeps_both_versions(synced: Synced) -> None:
    """Both sides change one file while the guest side is held (SIGSTOP): the newer mtime wins on both sides,
    and the loser is kept next to it as NAME.conflict-guest-<stamp>, on both sides."""
    p = synced.proj / "both.txt"
    p.write_text("base\n")
    until(lambda: synced.guest_has("both.txt", "base\n"), DEADLINE, "both.txt in the guest")
    pid = _sync_pid(synced)
    assert pid
    synced.m.ssh(f"kill -STOP {pid}")
    try:
        synced.sh("echo guest > /app/both.txt")
        p.write_text("host\n")
        later = time.time() + 60  # the host's version is the newer one, whatever the clocks say
        os.utime(p, (later, later))
    finally:
        synced.m.ssh(f"kill -CONT {pid}")

    def kept(names: list[str], read) -> bool:  # type: ignore[no-untyped-def]
        return any(n.startswith("both.txt.conflict-guest-") and read(n) == "guest\n" for n in names)

    until(lambda: synced.guest_has("both.txt", "host\n"), DEADLINE, "the host's version in the guest")
    until(
        lambda: kept(os.listdir(synced.proj), lambda n: (synced.proj / n).read_text()),
        DEADLINE,
        "the guest's version kept on the host",
    )
    assert p.read_text() == "host\n"
    guest_names = synced.sh("ls /app").split()
    assert kept(guest_names, lambda n: synced.sh(f"cat /app/{n}")), guest_names


def test_a_killed_guest_side_is_started_again_and_catches_up(synced: Synced) -> None:
    """The guest side dies (OOM, kill -9) while the link lives: the host agent opens it again and the merge
    carries over what changed on both sides meanwhile."""
    old = _sync_pid(synced)
    synced.m.ssh(f"kill -9 {old}")
    synced.sh("echo while-down > /app/written-while-down.txt")
    (synced.proj / "host-while-down.txt").write_text("host\n")
    until(lambda: _sync_pid(synced) not in ("", old), RESTART, "a new guest side")
    back = synced.proj / "written-while-down.txt"
    until(
        lambda: back.exists() and back.read_text() == "while-down\n", RESTART, "the guest's file on the host"
    )
    until(lambda: synced.guest_has("host-while-down.txt", "host\n"), RESTART, "the host's file in the guest")


def test_host_files_in_flight_when_the_channel_dies_are_not_lost(synced: Synced) -> None:
    """New host files sent while the guest side is held (SIGSTOP), which then dies (kill -9) before applying
    them: the next merge copies them again instead of taking them for deleted in the guest and deleting
    them on the host (what a link drop under load did before the guest confirmed what it applied)."""
    pid = _sync_pid(synced)
    assert pid
    synced.m.ssh(f"kill -STOP {pid}")
    flight = synced.proj / "in-flight"
    try:
        flight.mkdir()
        for i in range(50):
            (flight / f"f{i}").write_text(f"{i}\n")
        state = synced.m.home / "m" / synced.m.name / "sync-state.json"
        # sent into the channel, and not confirmed (the guest side is stopped): the folder and its 50 files
        until(
            lambda: json.loads(state.read_text())[str(synced.proj)]["unconfirmed"] == 51, DEADLINE, "the send"
        )
    finally:
        synced.m.ssh(f"kill -9 {pid}")
    until(lambda: _sync_pid(synced) not in ("", pid), RESTART, "a new guest side")
    until(lambda: synced.sh("ls /app/in-flight | wc -l").strip() == "50", RESTART, "the files in the guest")
    assert len(os.listdir(flight)) == 50


def _mounts(synced: Synced) -> list[str]:
    """The guest's mounts at the live share and at the sync share, in mount order (FSTYPE each)."""
    out = []
    for path in (synced.live, synced.proj):
        _status, found, _ = synced.m.ssh(f"findmnt -rn -M {path} -o FSTYPE")
        out += [f"{path.name} {t}" for t in found.decode().split()]
    return out


def _copy_seen_through_the_live_share(synced: Synced) -> bool:
    """In a container with `-v LIVE:/h -v PROJ:/app`: /h/proj is the sync copy (/app's filesystem), not the
    live share's own view of the folder (a recursive bind, as Docker's, brings the copy's bind along)."""
    out = synced.m.docker(
        "run", "--rm", "-v", f"{synced.live}:/h", "-v", f"{synced.proj}:/app", IMAGE,
        "stat", "-c", "%d", "/h", "/h/proj", "/app",
    ).stdout.split()  # fmt: skip
    live_dev, nested_dev, app_dev = out
    return nested_dev == app_dev != live_dev


def test_the_live_share_shows_the_copy_at_the_sub_path(synced: Synced) -> None:
    """`-v LIVE:/h` shows the sync copy at /h/proj, the same folder as `-v PROJ:/app`; a write there goes
    through the sync."""
    assert _mounts(synced) == ["live virtiofs", "proj ext4"]
    assert _copy_seen_through_the_live_share(synced)
    out = synced.m.docker(
        "run", "--rm", "-v", f"{synced.live}:/h", IMAGE, "sh", "-c",
        "cat /h/beside.txt; echo via-home > /h/proj/via-home.txt",
    ).stdout  # fmt: skip
    assert out == "live\n"
    made = synced.proj / "via-home.txt"
    until(lambda: made.exists() and made.read_text() == "via-home\n", DEADLINE, "via-home.txt on the host")
    if os.geteuid() == 0:  # written on the host by the sync (as the share's owner), not by virtiofsd
        assert (made.stat().st_uid, made.stat().st_gid) == OWNER


def _watch(synced: Synced) -> dict:
    from pymachine.hostvm.hostagent import control

    return control.call(synced.m.home / "m" / synced.m.name / "ha.sock", "status", timeout=120)["watch"]


def test_the_live_shares_change_events_leave_the_sync_share_to_the_sync(synced: Synced) -> None:
    """A container binds the live share, so the host agent watches it and sends change events; host edits
    under the sync share are seen and left out (the sync carries them), edits beside it are sent."""
    cid = synced.m.docker("run", "-d", "-v", f"{synced.live}:/h", IMAGE, "sleep", "600").stdout.strip()
    try:
        until(
            lambda: str(synced.live) in _watch(synced)["paths"], DEADLINE * 4, "the watch on the live share"
        )
        before = _watch(synced)
        (synced.proj / "edited-under-watch.txt").write_text("synced\n")
        until(
            lambda: synced.guest_has("edited-under-watch.txt", "synced\n"), DEADLINE, "the edit in the guest"
        )
        until(lambda: _watch(synced)["skipped"] > before["skipped"], DEADLINE, "the edit seen and left out")
        (synced.live / "beside-edit.txt").write_text("live\n")
        until(lambda: _watch(synced)["sent"] > before["sent"], DEADLINE, "the edit beside it sent")
    finally:
        synced.m.docker(
            "rm", "-f", cid, check=False
        )  # (a container on the live share would keep the save off)


def _boot_id(synced: Synced) -> str:
    return synced.m.ssh("cat /proc/sys/kernel/random/boot_id")[1].decode().strip()


def test_changes_made_while_saved_are_applied_at_start(synced: Synced) -> None:
    """stop saves (the copy's bind off, then the virtiofs share unmounted and unplugged), start resumes (the
    share plugged and mounted again, then the copy bound over it), and the merge brings what changed."""
    boot = _boot_id(synced)
    stop = synced.m.pymachine("stop", synced.m.name)
    assert "saved machine state" in stop.stdout + stop.stderr, stop
    (synced.proj / "pre.txt").write_text("edited while stopped\n")
    (synced.proj / "gone.txt").unlink()
    (synced.proj / "new-while-stopped.txt").write_text("new\n")
    start = synced.m.pymachine("start", synced.m.name)
    assert "cold boot" not in start.stdout + start.stderr and _boot_id(synced) == boot, start
    assert _mounts(synced) == ["live virtiofs", "proj ext4"]  # outer, then the copy over it: not under it
    out = synced.sh("cat /app/pre.txt /app/new-while-stopped.txt; ls /app/gone.txt 2>&1; true")
    assert out.startswith("edited while stopped\nnew\n") and "No such file" in out, out
    # and it is live again, seen through the live share as well
    (synced.proj / "after.txt").write_text("after\n")
    until(lambda: synced.guest_has("after.txt", "after\n"), DEADLINE, "a change after the resume")
    assert _copy_seen_through_the_live_share(synced)
