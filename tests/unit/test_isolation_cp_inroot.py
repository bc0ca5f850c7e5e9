"""inroot.open_in_root: paths below a root fd resolved as if it were `/`, by openat2 and by the walk alike."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pymachine_agent import inroot

Opener = Callable[..., int]


def _walk(root_fd: int, path: str, flags: int = os.O_PATH, *, follow_last: bool = True) -> int:
    return inroot.walk(root_fd, path.lstrip("/"), flags | (0 if follow_last else os.O_NOFOLLOW), follow_last)


@pytest.fixture(params=["openat2", "walk"])
def opener(request: pytest.FixtureRequest) -> Opener:
    return inroot.open_in_root if request.param == "openat2" else _walk


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("inside\n")
    (r / "a" / "b").mkdir(parents=True)
    (r / "a" / "abs").symlink_to("/etc")  # absolute: the root's /etc
    (r / "a" / "up").symlink_to("../../../../../../etc")  # climbs: stops at the root
    (r / "loop").symlink_to("loop")
    (r / "file").write_text("f\n")
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    try:
        yield r, fd
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    try:
        rfd = inroot.reopen(fd, os.O_RDONLY)
        with open(rfd) as f:
            return f.read()
    finally:
        os.close(fd)


WAYS_OUT = ["/a/abs/passwd", "a/up/passwd", "/../../etc/passwd", "/a/b/../../etc/passwd"]


@pytest.mark.parametrize("path", WAYS_OUT)
def test_every_way_out_lands_inside_the_root(root: tuple[Path, int], opener: Opener, path: str) -> None:
    _, fd = root
    assert _read(opener(fd, path)) == "inside\n"  # the host's /etc/passwd is never what opens


def test_the_last_symlink_is_opened_itself_when_asked(root: tuple[Path, int], opener: Opener) -> None:
    _, fd = root
    link = opener(fd, "/a/abs", os.O_PATH, follow_last=False)
    try:
        assert os.readlink("", dir_fd=link) == "/etc"
    finally:
        os.close(link)
    with pytest.raises(OSError) as err:
        opener(fd, "/a/abs", os.O_RDONLY | os.O_DIRECTORY, follow_last=False)
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_loops_and_files_in_the_middle_fail(root: tuple[Path, int], opener: Opener) -> None:
    _, fd = root
    with pytest.raises(OSError) as err:
        opener(fd, "/loop")
    assert err.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        opener(fd, "/file/x")
    with pytest.raises(FileNotFoundError):
        opener(fd, "/missing")


def test_make_dirs_creates_inside_the_root_through_an_absolute_link(root: tuple[Path, int]) -> None:
    r, fd = root
    (r / "a" / "elsewhere").symlink_to("/etc")  # the root's /etc, never the host's
    made = inroot.make_dirs(fd, "/a/elsewhere/new/deeper")
    os.close(made)
    assert (r / "etc" / "new" / "deeper").is_dir()
    assert not Path("/etc/new").exists()
    (r / "a" / "dangling").symlink_to("/nowhere")
    with pytest.raises(FileNotFoundError):  # as Go's MkdirAll in Docker's chroot: not through a dangling link
        inroot.make_dirs(fd, "/a/dangling/x")


def test_open_in_root_refuses_to_create(root: tuple[Path, int]) -> None:
    with pytest.raises(ValueError):
        inroot.open_in_root(root[1], "/new", os.O_WRONLY | os.O_CREAT)
