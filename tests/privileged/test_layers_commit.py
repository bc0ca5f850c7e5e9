"""Commit of a real overlay upper dir: whiteouts and opaque dirs go back to `.wh.` entries and round-trip."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import busybox_archive

from pymachine_agent.images import ImageError, ImageStore
from pymachine_agent.images.commit import write_layer

BB = "pymachine/busybox:latest"


@contextlib.contextmanager
def overlay(lowers: list[Path], work: Path) -> Iterator[tuple[Path, Path]]:
    """Mount lowers (lowest first) + a fresh upper; yields (merged, upper)."""
    merged, upper, wd = work / "merged", work / "upper", work / "work"
    for d in (merged, upper, wd):
        d.mkdir(parents=True)
    lowerdir = ":".join(str(d) for d in reversed(lowers))
    opts = f"lowerdir={lowerdir},upperdir={upper},workdir={wd}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield merged, upper
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_commit_upper_dir_round_trips_through_overlay(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    store.load(io.BytesIO(busybox_archive()))
    parent_id = store.resolve(BB)
    with overlay(store.layer_dirs(BB), tmp_path / "c1") as (merged, upper):
        (merged / "etc/new.txt").write_text("new\n")
        os.chown(merged / "etc/new.txt", 1000, 1000)
        os.chmod(merged / "etc/new.txt", 0o4750)  # after chown, which would clear setuid
        os.unlink(merged / "etc/passwd")  # -> whiteout in upper
        subprocess.run(["rm", "-rf", str(merged / "bin")], check=True)
        (merged / "bin").mkdir()  # -> opaque dir in upper
        (merged / "bin/only").write_text("only\n")
        os.link(merged / "bin/only", merged / "bin/only2")
        os.symlink("/etc/new.txt", merged / "link")
    assert stat.S_ISCHR(os.lstat(upper / "etc/passwd").st_mode)

    buf = io.BytesIO()
    write_layer(upper, buf)
    again = io.BytesIO()
    write_layer(upper, again)
    assert buf.getvalue() == again.getvalue()  # deterministic: same upper, same diff_id
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        names = t.getnames()
    assert "etc/.wh.passwd" in names and "bin/.wh..wh..opq" in names
    assert not any(n.startswith("work") for n in names)

    new_id = store.commit(
        upper, BB, {"Cmd": ["cat", "/etc/new.txt"]}, created_by="test step", tag="committed:1"
    )
    info = store.inspect("committed:1")
    assert info["Id"] == new_id and info["Parent"] == parent_id
    assert info["Config"]["Cmd"] == ["cat", "/etc/new.txt"] and info["Config"]["Env"] == ["PATH=/bin"]
    assert len(info["RootFS"]["Layers"]) == 2
    hist = store.history("committed:1")
    assert hist[0]["CreatedBy"] == "test step" and hist[0]["Size"] > 0 and len(hist) == 2

    with overlay(store.layer_dirs(new_id), tmp_path / "c2") as (merged, _):
        assert (merged / "etc/new.txt").read_text() == "new\n"
        st = os.stat(merged / "etc/new.txt")
        assert stat.S_IMODE(st.st_mode) == 0o4750 and st.st_uid == 1000
        assert not (merged / "etc/passwd").exists()
        assert (merged / "etc/group").exists()
        assert sorted(os.listdir(merged / "bin")) == ["only", "only2"]
        assert os.stat(merged / "bin/only").st_ino == os.stat(merged / "bin/only2").st_ino
        assert os.readlink(merged / "link") == "/etc/new.txt"


def test_config_only_commit_adds_no_layer(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    store.load(io.BytesIO(busybox_archive()))
    new_id = store.commit(None, BB, {"Env": ["PATH=/bin", "A=b"]}, created_by="ENV A=b")
    assert store.layer_dirs(new_id) == store.layer_dirs(BB)
    assert store.config(new_id)["history"][-1]["empty_layer"] is True
    assert store.history(new_id)[0]["Size"] == 0
    assert store.inspect(new_id)["Config"]["Env"] == ["PATH=/bin", "A=b"]


def test_an_upper_with_an_overlay_redirect_is_refused(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(ImageError, match="redirect_dir=off"):
        write_layer(upper, io.BytesIO())
