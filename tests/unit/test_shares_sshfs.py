"""The reverse-sshfs transport's pure parts: the host SFTP server confined to a share (driven by paramiko's
real SFTP client over a socketpair, the same bytes sshfs sends), and the guest command line."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pymachine.hostvm.hostagent import sshfs
from pymachine.hostvm.hostagent.sftpshare import Escape, Root, ShareServer

ENTRIES = ["hello.txt", "inside", "rel-out", "sub", "to-home", "to-key", "to-root"]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A share next to a 'home' with a secret, and a share that holds links pointing out of it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("SECRET")
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hi")
    (share / "sub").mkdir()
    (share / "to-root").symlink_to("/")
    (share / "to-home").symlink_to(home)
    (share / "to-key").symlink_to(home / ".ssh" / "id_rsa")
    (share / "rel-out").symlink_to("../home/.ssh/id_rsa")
    (share / "inside").symlink_to("hello.txt")
    return {"home": home, "share": share}


class Pipe:
    """The client's end: a socket with the one Channel method paramiko's SFTP client logs with."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def close(self) -> None:
        self.sock.close()

    def get_name(self) -> str:
        return "test"


def client(share: Path, readonly: bool = False) -> Iterator[paramiko.SFTPClient]:
    ours, theirs = socket.socketpair()
    server = ShareServer(ours, Root.of(str(share), readonly))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    sftp = paramiko.SFTPClient(Pipe(theirs))
    try:
        yield sftp
    finally:
        sftp.close()
        theirs.close()
        thread.join(timeout=5)
        ours.close()


@pytest.fixture
def sftp(tree: dict[str, Path]) -> Iterator[paramiko.SFTPClient]:
    yield from client(tree["share"])


def test_read_write_rename_delete_inside_the_share(sftp: paramiko.SFTPClient, tree: dict[str, Path]) -> None:
    s = tree["share"]
    with sftp.open(f"{s}/hello.txt") as f:
        assert f.read() == b"hi"
    with sftp.open(f"{s}/sub/new.txt", "w") as f:
        f.write(b"x" * 100_000)
    assert (s / "sub" / "new.txt").read_bytes() == b"x" * 100_000
    (s / "target.txt").write_text("old")
    sftp.rename(f"{s}/sub/new.txt", f"{s}/target.txt")  # replaces, as rename(2) does
    assert (s / "target.txt").stat().st_size == 100_000
    sftp.remove(f"{s}/target.txt")
    sftp.mkdir(f"{s}/d")
    sftp.rmdir(f"{s}/d")
    assert sorted(sftp.listdir(str(s))) == [
        "hello.txt",
        "inside",
        "rel-out",
        "sub",
        "to-home",
        "to-key",
        "to-root",
    ]
    with sftp.open(f"{s}/inside") as f:  # a link that stays inside is followed
        assert f.read() == b"hi"


@pytest.mark.parametrize(
    "path",
    [
        "{s}/../home/.ssh/id_rsa",
        "{s}/sub/../../home/.ssh/id_rsa",
        "/etc/passwd",
        "{s}/to-key",
        "{s}/rel-out",
        "{s}/to-home/.ssh/id_rsa",
        "{s}/to-root/etc/passwd",
    ],
)
def test_escapes_read_nothing_outside_the_share(
    sftp: paramiko.SFTPClient, tree: dict[str, Path], path: str
) -> None:
    path = path.format(s=tree["share"])
    with pytest.raises(PermissionError):
        sftp.open(path).read()
    with pytest.raises(PermissionError):
        sftp.stat(path)


def test_escapes_write_nothing_outside_the_share(sftp: paramiko.SFTPClient, tree: dict[str, Path]) -> None:
    s, home = tree["share"], tree["home"]
    for path in (f"{s}/to-home/planted", f"{s}/../home/planted", f"{s}/to-key"):
        with pytest.raises(PermissionError):
            sftp.open(path, "w").write(b"pwned")
    with pytest.raises(PermissionError):
        sftp.mkdir(f"{s}/to-home/newdir")
    with pytest.raises(PermissionError):
        sftp.rename(f"{s}/hello.txt", f"{s}/to-home/moved")
    with pytest.raises(PermissionError):
        sftp.remove(f"{s}/to-home/.ssh/id_rsa")
    with pytest.raises(PermissionError):
        sftp.listdir(f"{s}/to-root")
    with pytest.raises(PermissionError):
        sftp.chmod(f"{s}/to-key", 0o777)
    assert (home / ".ssh" / "id_rsa").read_text() == "SECRET"
    assert sorted(os.listdir(home)) == [".ssh"]
    assert (home / ".ssh" / "id_rsa").stat().st_mode & 0o777 != 0o777


def test_links_are_seen_as_links_and_can_be_removed(sftp: paramiko.SFTPClient, tree: dict[str, Path]) -> None:
    s = tree["share"]
    assert sftp.readlink(f"{s}/to-root") == "/"
    assert sftp.lstat(f"{s}/to-key").st_mode is not None
    sftp.symlink("/etc/shadow", f"{s}/made")  # stored as text; never followed by the server
    assert os.readlink(s / "made") == "/etc/shadow"
    with pytest.raises(PermissionError):
        sftp.open(f"{s}/made").read()
    sftp.remove(f"{s}/to-key")  # removes the link, not the key
    assert (tree["home"] / ".ssh" / "id_rsa").exists()


def test_no_setuid_bits_and_no_chown(sftp: paramiko.SFTPClient, tree: dict[str, Path]) -> None:
    s = tree["share"]
    sftp.chmod(f"{s}/hello.txt", 0o6755)
    assert (s / "hello.txt").stat().st_mode & 0o7777 == 0o755
    with pytest.raises(OSError):
        sftp.chown(f"{s}/hello.txt", 1234, 1234)
    assert (s / "hello.txt").stat().st_uid != 1234


def test_a_read_only_share_refuses_every_change(tree: dict[str, Path]) -> None:
    s = tree["share"]
    for sftp in client(s, readonly=True):
        assert sftp.open(f"{s}/hello.txt").read() == b"hi"
        with pytest.raises(OSError):
            sftp.open(f"{s}/hello.txt", "a").write(b"x")
        with pytest.raises(OSError):
            sftp.open(f"{s}/new", "w")
        for method, args in (
            (sftp.remove, (f"{s}/hello.txt",)),
            (sftp.mkdir, (f"{s}/d",)),
            (sftp.rename, (f"{s}/hello.txt", f"{s}/x")),
            (sftp.chmod, (f"{s}/hello.txt", 0o600)),
            (sftp.symlink, ("x", f"{s}/l")),
        ):
            with pytest.raises(OSError):
                method(*args)
    assert sorted(os.listdir(s)) == ENTRIES
    assert (s / "hello.txt").read_text() == "hi"


def test_resolve_is_lexical_first_then_real(tree: dict[str, Path]) -> None:
    s = tree["share"]
    root = Root.of(str(s))
    assert root.resolve(f"{s}/sub/../hello.txt") == str(s / "hello.txt")
    assert root.resolve("hello.txt") == str(s / "hello.txt")  # relative paths start at the share
    assert root.resolve(f"{s}/to-root", follow=False) == str(s / "to-root")
    for bad in (f"{s}/..", f"{s}x/file", "/", f"{s}/to-root/etc"):
        with pytest.raises(Escape):
            root.resolve(bad)


def test_mount_command_quotes_the_path_and_sets_the_isolation_options() -> None:
    cmd = sshfs.mount_command("/home/me/my proj", readonly=False)
    assert "'/home/me/my proj'" in cmd
    opts = sshfs.mount_options(readonly=False)
    assert {"passive", "allow_other", "nosuid", "nodev"} <= set(opts)
    assert "follow_symlinks" not in opts and "ro" not in opts
    assert "ro" in sshfs.mount_options(readonly=True)
    assert "P='/tmp/$(reboot)';" in sshfs.mount_command("/tmp/$(reboot)", readonly=False)  # never expanded


def test_list_shows_a_failed_share_as_degraded_with_the_reason() -> None:
    from pymachine.app.cli.machine_cmd import engine_summary

    status = {"running": True, "state": "ready", "link": {"state": "up"}, "forwards": []}
    assert engine_summary({**status, "shares": [{"path": "/p", "state": "mounted"}]}) == "ready"
    bad = {"path": "/p", "state": "failed", "error": "the host folder /p does not exist"}
    assert engine_summary({**status, "shares": [bad]}) == (
        "degraded: share /p failed: the host folder /p does not exist"
    )
