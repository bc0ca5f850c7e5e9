""".dockerignore matching (moby/patternmatcher semantics), context unpacking and path confinement."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pymachine_agent.build.context import (
    ContextError,
    DockerIgnore,
    apply_dockerignore,
    expand_sources,
    go_match,
    prepare,
    resolve_in_root,
    unpack,
)


def ign(*lines: str) -> DockerIgnore:
    return DockerIgnore(list(lines))


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        (["*.log"], "a.log", True),
        (["*.log"], "sub/a.log", False),  # * stops at /
        (["**/*.log"], "sub/deep/a.log", True),
        (["**/*.log"], "a.log", True),  # ** matches zero directories
        (["sub"], "sub/x/y.txt", True),  # a matching parent directory hides everything below
        (["sub/**"], "sub/x/y.txt", True),
        (["/sub"], "sub/y", True),  # leading slash is relative to the context
        (["./sub/../other"], "other/f", True),  # patterns are cleaned
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["[^a-c]x"], "bx", False),
        (["\\*star"], "*star", True),
        (["*", "!keep.txt"], "keep.txt", False),  # exception
        (["*", "!keep.txt"], "other.txt", True),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),  # last match wins
        (["*.md", "!README*.md", "README-secret.md"], "README.md", False),
        (["# comment", "", "  x  "], "x", True),
        (["node_modules"], "node_modules", True),
        (["docs/*.txt"], "docs/a/b.txt", False),
        (["**"], "anything/at/all", True),
    ],
)
def test_ignore_matching(patterns: list[str], path: str, ignored: bool) -> None:
    assert ign(*patterns).ignored(path) is ignored


def test_go_match_is_filepath_match() -> None:
    assert go_match("src/*.py", "src/a.py")
    assert not go_match("src/*.py", "src/x/a.py")
    assert go_match("**", "ab")  # without the ** extension, ** is just *
    assert not go_match("**", "a/b")


def make_tar(files: dict[str, bytes | None], extra: list[tarfile.TarInfo] | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_prepare_reads_dockerfile_then_applies_dockerignore(tmp_path: Path) -> None:
    ctx = make_tar(
        {
            "Dockerfile": b"FROM scratch\n",
            ".dockerignore": b"Dockerfile\n.dockerignore\nlogs\n*.tmp\n!keep.tmp\n",
            "logs/a/b.txt": b"x",
            "x.tmp": b"x",
            "keep.tmp": b"k",
            "run.sh": b"#!/bin/sh\n",
        }
    )
    root = tmp_path / "ctx"
    assert prepare(ctx, root, "Dockerfile") == "FROM scratch\n"
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["keep.tmp", "run.sh"]
    assert os.stat(root / "run.sh").st_mode & 0o777 == 0o755  # modes survive


def test_excluded_dir_with_reincluded_file_keeps_that_file(tmp_path: Path) -> None:
    root = tmp_path / "c"
    unpack(make_tar({"d/a": b"1", "d/b": b"2"}), root)
    apply_dockerignore(root, ign("d", "!d/b"))
    assert sorted(os.listdir(root / "d")) == ["b"]


def test_dockerfile_missing_and_gzip_context(tmp_path: Path) -> None:
    import gzip

    raw = make_tar({"Other": b"FROM scratch\n"}).getvalue()
    with pytest.raises(ContextError, match="Cannot locate specified Dockerfile: Dockerfile"):
        prepare(io.BytesIO(gzip.compress(raw)), tmp_path / "a", "Dockerfile")
    assert prepare(io.BytesIO(gzip.compress(raw)), tmp_path / "b", "Other") == "FROM scratch\n"
    with pytest.raises(ContextError, match="outside the build context"):
        prepare(io.BytesIO(raw), tmp_path / "c", "../Other")


def test_tar_members_cannot_escape(tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../../escape.txt")
    with pytest.raises(ContextError, match="outside itself"):
        unpack(make_tar({}, [evil]), tmp_path / "ctx")
    assert not (tmp_path / "escape.txt").exists()


def test_sources_confined_to_context(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("f")
    (tmp_path / "secret").write_text("s")
    os.symlink("/../../secret", root / "abs-link")
    os.symlink("../secret", root / "rel-link")
    with pytest.raises(ContextError, match="forbidden path outside the build context: ../secret"):
        expand_sources(root, "../secret")
    with pytest.raises(ContextError, match="forbidden path"):
        expand_sources(root, "sub/../../secret")
    # symlinks that point out are clamped to the context root, never followed out
    assert resolve_in_root(root, "abs-link") == root / "secret"
    assert resolve_in_root(root, "rel-link") == root / "secret"
    with pytest.raises(ContextError, match="file not found in build context"):
        expand_sources(root, "rel-link")
    assert expand_sources(root, "/sub/f") == [root / "sub" / "f"]


def test_glob_sources(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    for name in ("a.txt", "b.txt", "c.md", "dir1/x.txt", "dir2/y"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    assert [p.name for p in expand_sources(root, "*.txt")] == ["a.txt", "b.txt"]
    assert [p.name for p in expand_sources(root, "dir?")] == ["dir1", "dir2"]
    assert [p.name for p in expand_sources(root, "dir*/*.txt")] == ["x.txt"]
    with pytest.raises(ContextError, match="nothing in the build context matches"):
        expand_sources(root, "*.none")


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o644
    return info


def test_extraction_keeps_absolute_symlinks_and_never_writes_through_them(tmp_path: Path) -> None:
    from pymachine_agent.build import tarsafe

    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(_member("bin/sh", tarfile.SYMTYPE, "/bin/busybox"))  # a rootfs tarball's usual link
        tar.addfile(_member("escape", tarfile.SYMTYPE, str(outside)))
        data = b"payload"
        tar.addfile(_member("escape/evil", data=data), io.BytesIO(data))
        tar.addfile(_member("up", tarfile.SYMTYPE, "../../.."))
        tar.addfile(_member("up/evil2", data=data), io.BytesIO(data))
        tar.addfile(_member("hard", tarfile.LNKTYPE, "bin/sh"))
        tar.addfile(_member("dangling", tarfile.LNKTYPE, "nope"))
    buf.seek(0)
    root = tmp_path / "root"
    with (
        pytest.raises(ContextError, match="hard link to a missing"),
        tarfile.open(fileobj=buf, mode="r|") as tar,
    ):
        tarsafe.extract(tar, root, owners=False)
    assert os.readlink(root / "hard") == "/bin/busybox"
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert list(outside.iterdir()) == []  # the link was followed inside the root, as in a chroot
    assert (root / outside.relative_to("/") / "evil").read_bytes() == b"payload"
    assert (root / "evil2").read_bytes() == b"payload"


def test_extraction_refuses_dotdot_and_keeps_modes(tmp_path: Path) -> None:
    from pymachine_agent.build import tarsafe

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = _member("dir/x.sh", data=b"#!")
        info.mode = 0o4755
        tar.addfile(info, io.BytesIO(b"#!"))
        tar.addfile(_member("dir/../../x", data=b""), io.BytesIO(b""))
    buf.seek(0)
    with pytest.raises(ContextError, match="outside itself"), tarfile.open(fileobj=buf, mode="r|") as tar:
        tarsafe.extract(tar, tmp_path / "r", owners=False)
    assert os.stat(tmp_path / "r/dir/x.sh").st_mode & 0o7777 == 0o4755


def test_context_without_final_padding_is_complete_but_cut_data_is_not(tmp_path: Path) -> None:
    # the docker CLI's `-f <Dockerfile outside the context>` sends a tar that stops right after the last
    # member's bytes (no padding, no end-of-archive blocks); Go's reader accepts it, so must we
    raw = make_tar(
        {"Dockerfile": b"FROM scratch\n", "last": b"47 bytes of data that end the stream abruptly.."}
    )
    data = raw.getvalue()
    end = 512 * 3 + 47  # header+block, header+block, header + 47 bytes
    assert prepare(io.BytesIO(data[:end]), tmp_path / "a", "Dockerfile") == "FROM scratch\n"
    assert (tmp_path / "a" / "last").read_bytes().endswith(b"abruptly..")
    with pytest.raises(ContextError, match="not a valid tar"):
        prepare(io.BytesIO(data[: end - 10]), tmp_path / "b", "Dockerfile")
