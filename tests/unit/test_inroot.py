"""In-root path resolution and the bounded read of an image's /etc/passwd: never outside the root, never
blocked by a FIFO, never more than the limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.deadline import run_within

from pymachine_agent import inroot
from pymachine_agent.runtime import user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text("root:x:0:\nstaff:x:50:app\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file of the guest, outside every rootfs, that names a user the image does not have."""
    path = tmp_path / "guest-passwd"
    path.write_text("someone:x:4242:4242::/secret-home:/bin/sh\n")
    return path


def test_regular_file_inside(image: Path) -> None:
    assert inroot.read_regular(str(image), "/etc/passwd", 1 << 20).decode() == PASSWD
    u = user.resolve("app", image)
    assert (u.uid, u.gid, u.groups, u.home) == (1000, 1000, [50], "/home/app")


@pytest.mark.parametrize("style", ["absolute", "relative", "dir-link"])
def test_links_out_resolve_inside_the_root(image: Path, outside: Path, style: str) -> None:
    os.unlink(image / "etc/passwd")
    if style == "absolute":
        os.symlink(str(outside), image / "etc/passwd")
    elif style == "relative":
        os.symlink("../" * 20 + str(outside).lstrip("/"), image / "etc/passwd")
    else:
        os.symlink(str(outside.parent), image / "lnk")
        os.symlink(f"/lnk/{outside.name}", image / "etc/passwd")
    with pytest.raises(FileNotFoundError):
        inroot.read_regular(str(image), "/etc/passwd", 1 << 20)
    with pytest.raises(LookupError, match="unable to find user someone"):
        user.resolve("someone", image)
    assert user.resolve("4242", image).home == "/"  # numbers still work, nothing read from outside
    # the same target made inside the image is what the link means
    inside = image / str(outside).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("someone:x:7:7::/in-image:/bin/sh\n")
    assert user.resolve("someone", image).uid == 7


def test_fifo_is_an_error_not_a_hang(image: Path) -> None:
    os.unlink(image / "etc/passwd")
    os.mkfifo(image / "etc/passwd")
    answer = run_within(10, lambda: user.resolve("app", image))
    assert answer[:2] == ("raised", "LookupError") and "not a regular file" in answer[2]
    assert run_within(10, lambda: user.resolve("0:0", image).home) == ("ok", "/")  # numbers need no file
    os.unlink(image / "etc/passwd")
    os.symlink("/dev/zero", image / "etc/passwd")
    os.makedirs(image / "dev")
    os.symlink("/dev/zero", image / "dev/zero")  # a loop inside the root, never the guest's /dev/zero
    assert run_within(10, lambda: user.resolve("0", image).uid) == ("ok", 0)


def test_size_is_bounded(image: Path) -> None:
    (image / "etc/passwd").write_text(PASSWD + "x" * (user.MAX_SIZE + 1))
    with pytest.raises(LookupError, match="larger than"):
        user.resolve("app", image)


def test_malformed_lines_are_skipped(image: Path) -> None:
    (image / "etc/passwd").write_text("bad:x:NaN:0::/:/bin/sh\nshort:x:1\nfine:x:5:6::/h:/bin/sh\n")
    assert user.resolve("fine", image).uid == 5
    with pytest.raises(LookupError, match="unable to find user bad"):
        user.resolve("bad", image)


def test_walk_refuses_loops_and_non_directories(image: Path) -> None:
    os.symlink("a", image / "b")
    os.symlink("b", image / "a")
    with pytest.raises(OSError, match="(?i)too many levels"):  # ELOOP, from openat2 or the walk
        inroot.read_regular(str(image), "/a", 10)
    with pytest.raises(NotADirectoryError):
        inroot.read_regular(str(image), "/etc/passwd/x", 10)
    with pytest.raises(OSError, match="not a regular file"):
        inroot.read_regular(str(image), "/etc", 10)
    assert inroot.read_regular(str(image), "/etc/../../../etc/./passwd", 1 << 20).decode() == PASSWD


def test_resolve_is_the_same_rule_as_a_path(image: Path, outside: Path) -> None:
    os.symlink(str(outside), image / "abs")
    os.symlink("../../..", image / "up")
    assert inroot.resolve(str(image), "/abs") == str(image) + str(outside)
    assert inroot.resolve(str(image), "up/etc/passwd") == str(image / "etc/passwd")
    assert inroot.resolve(str(image), "abs", follow_last=False) == str(image / "abs")
