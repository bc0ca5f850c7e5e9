"""Issue 13 on a booted machine: virtiofs with cache=always, kept coherent by the change events
(docs/machines.md "virtiofs speed"; the guest agent's revalidate.py).

virtiofsd serves the shares with cache=always and a timeout of shares.CACHE_TIMEOUT_S (30 s), so the VM's FUSE
trusts a name, its attributes, a folder's listing and a file's pages that long. Each host change below is made
after the container has the old state cached (it read the file, listed the folder, or looked the name up and
missed) and must show in the container within DEADLINE (15 s), well under that timeout: a pass is the guest
taking the path afresh on the change event, not the cache running out. A path no container binds gets no
events: it must show within the timeout, the promised bound; a bind source is taken afresh when a container
starts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.agent import busybox_tarball
from support.machines import StartedMachine, home_env
from support.poll import until

from pymachine.hostvm import shares

B = "pymachine/busybox"
DEADLINE = 15.0  # seconds a host change may take to show in the container: with an exec's start, under 30 s


@dataclass
class Bound:
    m: StartedMachine
    proj: Path  # bound at /app in a running container, so watched by the host agent
    other: Path  # in the same share, bound by nobody
    cid: str

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        sock = self.m.home / "m" / self.m.name / "docker.sock"
        env = dict(self.m.env(), DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=str(self.other / ".dc"))
        env.pop("DOCKER_CONTEXT", None)
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout)

    def sh(self, script: str) -> str:
        """`script` in the running container; its stdout."""
        return self.docker("exec", self.cid, "sh", "-c", script).stdout

    def guest(self, command: str) -> str:
        """`command` in the VM itself (as `pymachine ssh` would run it), not in a container."""
        with home_env(self.m.home):
            from pymachine.hostvm import ssh

            _status, out, _err = ssh.run(self.m.name, command, timeout=300)
        return out.decode(errors="replace")


def _watched(m: StartedMachine) -> list[str]:
    from pymachine.hostvm.hostagent import control

    return control.call(m.home / "m" / m.name / "ha.sock", "status", timeout=120)["watch"]["paths"]


@pytest.fixture(scope="module")
def bound(session_machine: StartedMachine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bound]:
    base = tmp_path_factory.mktemp("coherence")  # under the system temp folder: shared by the machine
    proj, other = base / "proj", base / "other"
    proj.mkdir()
    other.mkdir()
    b = Bound(session_machine, proj, other, "")
    with home_env(session_machine.home):
        from pymachine.hostvm import machines

        if machines.get(session_machine.name).state != "running":  # a module before may have stopped it
            machines.start(session_machine.name)
    share = next(p for p in ("/tmp", "/var/tmp") if str(base).startswith(p + "/"))
    fstype = b.guest(f"awk '$2 == \"{share}\" {{print $3}}' /proc/mounts").split()
    assert fstype[-1:] == ["virtiofs"], f"{share} in the VM: {fstype}"
    if b.docker("image", "inspect", B).returncode != 0:
        loaded = b.docker("load", "-i", str(busybox_tarball()))
        assert loaded.returncode == 0, loaded.stderr
    run = b.docker("run", "-d", "-v", f"{proj}:/app", B, "sleep", "3600")
    assert run.returncode == 0, run.stderr
    b.cid = run.stdout.strip()
    try:
        until(lambda: str(proj) in _watched(session_machine), 120, "the host agent's watch on /app's source")
        yield b
    finally:
        b.docker("rm", "-f", b.cid)
        shutil.rmtree(base, ignore_errors=True)


def _seen(b: Bound, script: str, want: str, what: str) -> None:
    """Poll `script` inside the container every 0.1 s (one exec: under TCG an exec alone takes seconds) until
    its output is `want`, for at most DEADLINE seconds of the guest's clock."""
    loop = (
        f"want={shlex.quote(want.rstrip(chr(10)))}; end=$(($(date +%s) + {int(DEADLINE)})); i=0; "
        f"while [ $(date +%s) -le $end ]; do "
        f'[ "$(sh -c {shlex.quote(script)} 2>/dev/null)" = "$want" ] && echo "seen at poll $i" && exit 0; '
        "sleep 0.1; i=$((i + 1)); done; exit 1"
    )
    start = time.monotonic()
    out = b.sh(loop)
    took = time.monotonic() - start
    assert out.startswith("seen at poll"), f"{what} not seen within {DEADLINE} s: {b.sh(script)!r}"
    print(f"{what}: seen at the container's poll {out.split()[-1]} (0.1 s apart), {took:.1f} s with the exec")


def test_a_host_save_by_rename_is_seen(bound: Bound) -> None:
    """vim, `sed -i` and most IDEs write a new file and rename it over the old one: a new inode."""
    saved, never_read = bound.proj / "saved.txt", bound.proj / "unread.txt"
    saved.write_text("old\n")
    never_read.write_text("old\n")
    assert bound.sh("cat /app/saved.txt") == "old\n"  # name, attributes and pages now cached in the VM
    for f in (saved, never_read):
        tmp = f.with_name(f".{f.name}.swp")
        tmp.write_text("new, and longer\n")
        os.rename(tmp, f)
    _seen(bound, "cat /app/saved.txt /app/unread.txt", "new, and longer\n" * 2, "the saved files")


def test_a_host_delete_is_seen(bound: Bound) -> None:
    gone = bound.proj / "gone.txt"
    gone.write_text("x\n")
    assert bound.sh("cat /app/gone.txt; ls /app").count("gone.txt") == 1
    gone.unlink()
    _seen(bound, "test -e /app/gone.txt || echo gone; ls /app | grep -c gone.txt", "gone\n0\n", "the delete")


def test_a_name_looked_up_before_it_existed_is_seen_when_the_host_creates_it(bound: Bound) -> None:
    """The container's miss (and its listing of the folder) came before the host made the file."""
    assert (
        bound.sh("cat /app/later.txt 2>/dev/null || echo missing; ls /app | grep -c later") == "missing\n0\n"
    )
    (bound.proj / "later.txt").write_text("here\n")
    _seen(bound, "cat /app/later.txt; ls /app | grep -c later", "here\n1\n", "the new file")


def test_a_host_folder_rename_is_seen(bound: Bound) -> None:
    d1 = bound.proj / "d1"
    (d1 / "sub").mkdir(parents=True)
    (d1 / "sub" / "x.txt").write_text("in d1\n")
    assert bound.sh("cat /app/d1/sub/x.txt; ls /app/d1") == "in d1\nsub\n"
    d1.rename(bound.proj / "d2")
    _seen(
        bound,
        "test -e /app/d1 || echo no-d1; cat /app/d2/sub/x.txt; ls /app | grep -c '^d[12]$'",
        "no-d1\nin d1\n1\n",
        "the renamed folder",
    )


def test_a_same_size_edit_in_place_is_seen(bound: Bound) -> None:
    """The inode, the name and the size stay: only the mtime says the cached pages are old."""
    same = bound.proj / "same.txt"
    same.write_text("AAAA\n")
    assert bound.sh("cat /app/same.txt") == "AAAA\n"
    time.sleep(0.01)  # a later mtime than the first write's, whatever the host filesystem's granularity
    with open(same, "r+") as fh:
        fh.write("BBBB\n")
    _seen(bound, "cat /app/same.txt", "BBBB\n", "the edit")


def test_a_bind_source_the_host_replaced_is_bound_as_the_host_has_it(bound: Bound) -> None:
    """No events for a path no container binds; the engine takes a bind source afresh at create and start,
    since a bind pins the folder it is given for the container's life."""
    src = bound.other / "src"
    src.mkdir()
    (src / "old.txt").write_text("o\n")
    assert bound.guest(f"ls {src}") == "old.txt\n"  # the VM now holds this folder's dentry
    shutil.rmtree(src)
    src.mkdir()
    (src / "new.txt").write_text("n\n")
    out = bound.docker("run", "--rm", "-v", f"{src}:/x", B, "ls", "/x")
    assert (out.returncode, out.stdout) == (0, "new.txt\n"), out.stderr


def test_a_host_edit_between_two_runs_of_the_same_folder_is_seen_by_the_second(bound: Bound) -> None:
    """Edit on the host, `docker run --rm -v $PWD:/app` again: what the first container read is still in the
    VM's caches, so the folder stays watched for the cache's timeout after its last container is gone."""
    src = bound.other / "runs"
    src.mkdir()
    (src / "v.txt").write_text("one\n")

    def run() -> str:
        out = bound.docker("run", "--rm", "-v", f"{src}:/x", B, "cat", "/x/v.txt")
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert run() == "one\n"
    # no container binds it now, and the host agent still watches it
    until(lambda: str(src) in _watched(bound.m), DEADLINE, "the watch kept after the container")
    tmp = src / ".v.swp"
    tmp.write_text("two\n")
    os.rename(tmp, src / "v.txt")
    until(lambda: run() == "two\n", DEADLINE, "the edit in the next container")


def test_a_path_no_container_binds_is_fresh_within_the_cache_timeout(
    bound: Bound, capsys: pytest.CaptureFixture
) -> None:
    f = bound.other / "unwatched.txt"
    f.write_text("old\n")
    assert bound.guest(f"cat {f}") == "old\n"
    tmp = f.with_name(".unwatched.swp")
    tmp.write_text("new\n")
    start = time.monotonic()
    os.rename(tmp, f)
    first = bound.guest(f"cat {f}")
    until(lambda: bound.guest(f"cat {f}") == "new\n", shares.CACHE_TIMEOUT_S + 60, "the bound", every=1.0)
    with capsys.disabled():
        print(
            f"\nunwatched save by rename: first read {first!r}, seen after {time.monotonic() - start:.1f} s"
        )
