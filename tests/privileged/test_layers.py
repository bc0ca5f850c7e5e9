"""Layer unpacking on real files as root: metadata kept, whiteouts as overlayfs sees them, escapes refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from support.registry import docker_archive, entry, file, tar_bytes

from pymachine_agent.images import DigestMismatch, ImageError, ImageStore, UnsafeLayerError

# vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (bit 13): all bytes < 0x80, so PAX keeps them.
CAP_NET_RAW = "\x01\x00\x00\x02" + "\x00\x20\x00\x00" + "\x00" * 12


def _diff_id(layer: bytes) -> str:
    return "sha256:" + hashlib.sha256(layer).hexdigest()


def test_unpack_keeps_owner_mode_mtime_xattrs_links(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    suid = entry("usr/bin/su", tarfile.REGTYPE, 0o4755, uid=1000, gid=1001, size=5)
    suid.pax_headers = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.capability": CAP_NET_RAW}
    layer = tar_bytes(
        [
            entry("usr/", tarfile.DIRTYPE, 0o755, mtime=1_600_000_000),
            entry("usr/bin/", tarfile.DIRTYPE, 0o750, uid=2, gid=3, mtime=1_600_000_001),
            (suid, b"su!!\n"),
            entry("usr/bin/su2", tarfile.LNKTYPE, 0o644, linkname="usr/bin/su"),
            entry("usr/abs", tarfile.SYMTYPE, 0o777, linkname="/etc/passwd", uid=5, gid=6),
            entry("usr/fifo", tarfile.FIFOTYPE, 0o640),
            file("top/no-parent-entry", b"x", 0o600),
        ]
    )
    meta = store.add_layer(io.BytesIO(layer), _diff_id(layer))
    root = store.layer_root(meta["diff_id"]) / "diff"
    su = os.lstat(root / "usr/bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755 and (su.st_uid, su.st_gid) == (1000, 1001)
    assert su.st_mtime == 1_700_000_000
    assert os.getxattr(root / "usr/bin/su", "user.note") == b"hello"
    assert os.getxattr(root / "usr/bin/su", "security.capability") == CAP_NET_RAW.encode()
    assert os.lstat(root / "usr/bin/su2").st_ino == su.st_ino
    bindir = os.lstat(root / "usr/bin")
    assert stat.S_IMODE(bindir.st_mode) == 0o750 and (bindir.st_uid, bindir.st_gid) == (2, 3)
    assert bindir.st_mtime == 1_600_000_001  # set after its children were created
    assert os.readlink(root / "usr/abs") == "/etc/passwd"
    assert os.lstat(root / "usr/abs").st_uid == 5
    assert stat.S_ISFIFO(os.lstat(root / "usr/fifo").st_mode)
    assert (root / "top/no-parent-entry").read_bytes() == b"x"
    assert meta["size"] == 6 and meta["tar_size"] == len(layer)


def test_gzip_layer_and_wrong_diff_id(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    layer = tar_bytes([file("a.txt", b"abc")])
    meta = store.add_layer(io.BytesIO(gzip.compress(layer)), _diff_id(layer))
    assert (store.layer_root(meta["diff_id"]) / "diff/a.txt").read_bytes() == b"abc"
    other = tar_bytes([file("b.txt", b"abc")])
    with pytest.raises(DigestMismatch):
        store.add_layer(io.BytesIO(other), "sha256:" + "0" * 64)
    assert not list((store.root / "tmp").iterdir())
    assert [p.name for p in (store.root / "layers").iterdir()] == [meta["diff_id"][7:]]


def test_not_a_tar_is_an_error(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    with pytest.raises(ImageError, match="not a valid tar"):
        store.add_layer(io.BytesIO(b"\x00garbage" * 100), None)


def test_whiteouts_and_opaque_dirs_give_the_overlay_view(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    lower = tar_bytes(
        [
            entry("etc/", tarfile.DIRTYPE, 0o755),
            file("etc/gone.txt", b"old"),
            file("etc/keep.txt", b"keep"),
            entry("dir/", tarfile.DIRTYPE, 0o755),
            file("dir/a", b"a"),
            file("dir/b", b"b"),
        ]
    )
    upper = tar_bytes(
        [
            entry("etc/", tarfile.DIRTYPE, 0o755),
            file("etc/.wh.gone.txt", b""),
            entry("dir/", tarfile.DIRTYPE, 0o755),
            file("dir/c", b"c"),
            file("dir/.wh..wh..opq", b""),  # after a child: the marker's position must not matter
        ]
    )
    loaded = store.load(io.BytesIO(docker_archive([lower, upper], ["wh/test:1"])))
    assert loaded == ["wh/test:1"]
    dirs = store.layer_dirs("wh/test:1")
    assert len(dirs) == 2
    wh = os.lstat(dirs[1] / "etc/gone.txt")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dirs[1] / "dir", "trusted.overlay.opaque") == b"y"
    assert not (dirs[1] / "etc/.wh.gone.txt").exists()

    merged, up, work = tmp_path / "merged", tmp_path / "up", tmp_path / "work"
    for d in (merged, up, work):
        d.mkdir()
    short = store.layer_dirs("wh/test:1", short=True)
    assert [d.resolve() for d in short] == [d.resolve() for d in dirs] and len(str(short[0])) < len(
        str(dirs[0])
    )
    lowerdir = ":".join(str(d) for d in reversed(short))  # overlay resolves the short links at mount
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lowerdir},upperdir={up},workdir={work}",
            str(merged),
        ],
        check=True,
    )
    try:
        assert sorted(os.listdir(merged / "etc")) == ["keep.txt"]
        assert sorted(os.listdir(merged / "dir")) == ["c"]
        assert (merged / "etc/keep.txt").read_bytes() == b"keep"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def _sentinel() -> str:
    return "pymachine-escape-" + uuid.uuid4().hex[:8]


def _malicious(tmp_path: Path, name: str) -> tuple[bytes, str, list[Path]]:
    """(layer tar, the entry name the error must mention, paths that must not exist afterwards)."""
    s = _sentinel()
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    if name == "dotdot":
        return tar_bytes([file(f"../../../../../../{s}", b"x")]), f"../../../../../../{s}", [Path("/") / s]
    if name == "dotdot-nested":
        rel = os.path.relpath(outside, tmp_path / "store/tmp/x/diff")
        return tar_bytes([file(f"ok/{rel}/{s}", b"x")]), s, [outside / s]
    if name == "absolute":
        return tar_bytes([file(f"/etc/{s}", b"x")]), f"/etc/{s}", [Path("/etc") / s]
    if name == "symlink-escape":
        layer = tar_bytes([entry("a", tarfile.SYMTYPE, 0o777, linkname=str(outside)), file(f"a/{s}", b"x")])
        return layer, f"a/{s}", [outside / s]
    if name == "symlink-replaces-dir":
        # the folder was opened (and its fd cached) for a/x before a symlink replaced it
        layer = tar_bytes(
            [
                entry("a/", tarfile.DIRTYPE, 0o755),
                file("a/x", b"x"),
                entry("a", tarfile.SYMTYPE, 0o777, linkname=str(outside)),
                file(f"a/{s}", b"x"),
            ]
        )
        return layer, f"a/{s}", [outside / s]
    if name == "symlink-root":
        layer = tar_bytes([entry("a", tarfile.SYMTYPE, 0o777, linkname="/"), file(f"a/etc/{s}", b"x")])
        return layer, f"a/etc/{s}", [Path("/etc") / s]
    if name == "hardlink-abs":
        layer = tar_bytes([entry(s, tarfile.LNKTYPE, 0o644, linkname="/etc/passwd")])
        return layer, s, []
    if name == "hardlink-dotdot":
        layer = tar_bytes([entry(s, tarfile.LNKTYPE, 0o644, linkname="../../../../../../etc/passwd")])
        return layer, s, []
    if name == "hardlink-through-symlink":
        layer = tar_bytes(
            [
                entry("e", tarfile.SYMTYPE, 0o777, linkname="/etc"),
                entry(s, tarfile.LNKTYPE, 0o644, linkname="e/passwd"),
            ]
        )
        return layer, s, []
    if name in ("whiteout-dotdot", "whiteout-dot"):
        # `.wh...` names "..": deleting it would remove the folder the layer is unpacked in
        leaf = ".wh..." if name == "whiteout-dotdot" else ".wh.."
        layer = tar_bytes([file(f"sub/{s}", b"x"), file(f"sub/{leaf}", b"")])
        return layer, f"sub/{leaf}", []
    if name == "block-device":
        return tar_bytes([entry(s, tarfile.BLKTYPE, 0o600, devmajor=8, devminor=0)]), s, []
    if name == "char-device":
        return tar_bytes([entry(s, tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)]), s, []
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "dotdot-nested",
        "absolute",
        "symlink-escape",
        "symlink-replaces-dir",
        "symlink-root",
        "hardlink-abs",
        "hardlink-dotdot",
        "hardlink-through-symlink",
        "whiteout-dotdot",
        "whiteout-dot",
        "block-device",
        "char-device",
    ],
)
def test_escaping_or_device_entries_are_refused(tmp_path: Path, case: str) -> None:
    store = ImageStore(tmp_path / "store")
    passwd_links = os.stat("/etc/passwd").st_nlink
    layer, named, must_not_exist = _malicious(tmp_path, case)
    with pytest.raises(UnsafeLayerError) as err:
        store.add_layer(io.BytesIO(layer), None)
    assert named in str(err.value)
    for path in must_not_exist:
        assert not os.path.lexists(path), path
    assert os.stat("/etc/passwd").st_nlink == passwd_links
    assert list((tmp_path / "outside").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []  # the half-unpacked layer was discarded
    assert list((store.root / "layers").iterdir()) == []


def test_a_refused_entry_in_an_archive_loads_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    good = tar_bytes([file("fine", b"ok")])
    bad = tar_bytes([file("../../evil", b"x")])
    with pytest.raises(UnsafeLayerError, match=r"\.\./\.\./evil"):
        store.load(io.BytesIO(docker_archive([good, bad], ["evil:1"])))
    assert not store.exists("evil:1")
    assert store.list() == []


def test_zstd_layer_without_the_module_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as on the guest: `import zstandard` fails
    store = ImageStore(tmp_path / "store")
    with pytest.raises(ImageError, match="zstd-compressed"):
        store.add_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\x00" * 64), None)
    assert list((store.root / "layers").iterdir()) == [] and list((store.root / "tmp").iterdir()) == []


def test_a_repeated_layer_is_stacked_once_at_its_top_place(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    a = tar_bytes([file("f", b"from a")])
    b = tar_bytes([file(".wh.f", b""), file("g", b"from b")])
    store.load(io.BytesIO(docker_archive([a, b, a], ["rep:1"])))
    assert len(store.inspect("rep:1")["RootFS"]["Layers"]) == 3
    dirs = store.layer_dirs("rep:1")
    assert [d.parent.name for d in dirs] == [_diff_id(b)[7:], _diff_id(a)[7:]]
    merged, up, work = tmp_path / "m", tmp_path / "u", tmp_path / "w"
    for d in (merged, up, work):
        d.mkdir()
    lowerdir = ":".join(str(d) for d in reversed(dirs))
    opts = f"lowerdir={lowerdir},upperdir={up},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        assert (merged / "f").read_bytes() == b"from a" and (merged / "g").read_bytes() == b"from b"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_odd_but_harmless_entries(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    layer = tar_bytes(
        [
            file("a", b"1"),
            entry("a", tarfile.LNKTYPE, 0o644, linkname="a"),  # a hardlink to itself
            file("a", b"2"),  # a later entry replaces an earlier one
            entry("d/", tarfile.DIRTYPE, 0o755),
            file("d/x", b"x"),
            file("d", b"now a file"),  # a file replaces a folder
            file(".wh..wh.plnk", b""),  # AUFS bookkeeping: skipped
        ]
    )
    root = store.layer_root(store.add_layer(io.BytesIO(layer), _diff_id(layer))["diff_id"]) / "diff"
    assert (root / "a").read_bytes() == b"2" and (root / "d").read_bytes() == b"now a file"
    assert sorted(os.listdir(root)) == ["a", "d"]


def test_an_entry_the_kernel_refuses_is_named(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    bad = entry("bad-xattr", tarfile.REGTYPE, 0o644, size=0)
    bad.pax_headers = {"SCHILY.xattr.nonamespace": "v"}  # no such xattr namespace: EOPNOTSUPP
    layer = tar_bytes([bad])
    with pytest.raises(ImageError, match="cannot unpack layer entry 'bad-xattr'"):
        store.add_layer(io.BytesIO(layer), None)
