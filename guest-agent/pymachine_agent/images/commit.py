"""`docker commit` and the builder's per-step layers: a container's overlay upper dir becomes a layer tar.

The conversion is the inverse of layers.py: a char 0/0 device (overlay whiteout) becomes an empty `.wh.NAME`
file, a dir carrying `trusted.overlay.opaque=y` gets a `.wh..wh..opq` entry. Names are sorted and mtimes
truncated to seconds so the same upper dir always gives the same diff_id. Other device nodes and sockets are
left out: layers.py would refuse them on unpack.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ImageError
from . import oci
from .changes import apply as apply_changes
from .layers import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX
from .reference import parse
from .views import now_rfc3339

if TYPE_CHECKING:
    from .store import ImageStore

_SKIP_XATTRS = ("trusted.overlay.", "security.selinux")
_UNDIFFABLE = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name in _UNDIFFABLE:
            # a renamed lower dir (redirect) or a metadata-only copy-up: the upper dir alone does not hold
            # the content, so a layer made from it would be silently wrong
            raise ImageError(
                f"cannot commit {path}: it carries {name} (mount container roots with "
                "redirect_dir=off,metacopy=off, the kernel default)"
            )
        if name.startswith(_SKIP_XATTRS):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def write_layer(upper: Path, out: BinaryIO) -> list[str]:
    """Write the layer tar of `upper` to `out`; returns the paths left out (devices, sockets)."""
    skipped: list[str] = []
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]

        def walk(dirpath: str, prefix: str) -> None:
            for name in sorted(os.listdir(dirpath)):
                full = os.path.join(dirpath, name)
                rel = prefix + name
                st = os.lstat(full)
                mode = st.st_mode
                if stat.S_ISCHR(mode) and st.st_rdev == os.makedev(0, 0):
                    tar.addfile(_info(prefix + WHITEOUT_PREFIX + name, st, tarfile.REGTYPE))
                elif stat.S_ISDIR(mode):
                    info = _info(rel + "/", st, tarfile.DIRTYPE)
                    info.pax_headers = _xattrs(full)
                    tar.addfile(info)
                    try:
                        opaque = os.getxattr(full, OPAQUE_XATTR, follow_symlinks=False) == b"y"
                    except OSError:
                        opaque = False
                    if opaque:
                        tar.addfile(_info(f"{rel}/{OPAQUE_MARKER}", st, tarfile.REGTYPE))
                    walk(full, rel + "/")
                elif stat.S_ISLNK(mode):
                    info = _info(rel, st, tarfile.SYMTYPE)
                    info.linkname = os.readlink(full)
                    tar.addfile(info)
                elif stat.S_ISREG(mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in links:
                        info = _info(rel, st, tarfile.LNKTYPE)
                        info.linkname = links[key]
                        tar.addfile(info)
                        continue
                    links[key] = rel
                    info = _info(rel, st, tarfile.REGTYPE)
                    info.size = st.st_size
                    info.pax_headers = _xattrs(full)
                    with open(full, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
                        tar.addfile(info, f)
                elif stat.S_ISFIFO(mode):
                    tar.addfile(_info(rel, st, tarfile.FIFOTYPE))
                else:
                    skipped.append(rel)

        walk(str(upper), "")
    return skipped


def merged_config(parent: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The new image's "config": the parent's, overridden by `changes`' keys (Cmd, Env, …). Two lowercase keys
    are not config keys: "config" (a container's whole Config, as `docker commit` starts from) is merged
    first, and "changes" (`--change` Dockerfile instructions) is applied last."""
    plain = {k: v for k, v in changes.items() if k not in ("config", "changes")}
    merged = {**parent, **(changes.get("config") or {}), **plain}
    return apply_changes(merged, list(changes.get("changes") or []))


def commit(
    store: ImageStore,
    upper_dir: Path | None,
    parent: str | None,
    changes: dict[str, Any],
    *,
    comment: str,
    author: str,
    created_by: str,
    tag: str | None,
) -> str:
    parent_id = store.resolve(parent) if parent else ""
    if parent_id:
        config = copy.deepcopy(store.config(parent_id))
    else:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    created = now_rfc3339()
    config["created"] = created
    if author:
        config["author"] = author
    config["config"] = merged_config(config.get("config") or {}, changes)
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    history: dict[str, Any] = {"created": created, "created_by": created_by}
    if comment:
        history["comment"] = comment
    if author:
        history["author"] = author
    if upper_dir is None:
        history["empty_layer"] = True
    else:
        work = store.tmp_dir()
        try:
            # The tar goes straight through gzip (level 1, mtime 0: fast and reproducible): the kept blob is
            # what push sends as is, and the store does not hold the layer twice uncompressed.
            gz_path = work / "layer.tar.gz"
            with (
                open(gz_path, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
            ):
                write_layer(upper_dir, gz)  # type: ignore[arg-type]
            with open(gz_path, "rb") as f:
                meta = store.import_layer(f, None, None, oci.DOCKER_LAYER_GZIP)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        config["rootfs"]["diff_ids"] = [*config["rootfs"].get("diff_ids", []), meta["diff_id"]]
    config["history"] = [*(config.get("history") or []), history]
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    tags = [parse(tag)] if tag else []
    return store.add_image(config_bytes, tags, parent=parent_id)
