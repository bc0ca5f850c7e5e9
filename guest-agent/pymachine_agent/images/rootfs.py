"""`docker import`: a tar of a root filesystem (plain, gzip, bzip2, xz or zstd) becomes a one-layer image.

The tar goes through the same hostile-tar-safe unpacking as a pulled layer (`import_layer`), so an import
cannot write outside its layer folder. The config is dockerd's for an import: no parent, the `--change`
instructions applied to an empty config, and one history entry whose comment is the message or
"Imported from <source>".
"""

from __future__ import annotations

import bz2
import json
import lzma
import shutil
from typing import TYPE_CHECKING, Any, BinaryIO

from . import oci
from .changes import apply as apply_changes
from .layers import ZSTD_MAGIC, decompressed
from .reference import parse
from .views import now_rfc3339

if TYPE_CHECKING:
    from .store import ImageStore

_XZ_MAGIC = b"\xfd7zXZ"
_BZIP2_MAGIC = b"BZh"


def import_rootfs(
    store: ImageStore, src: BinaryIO, *, source: str, tag: str, message: str, changes: list[str]
) -> str:
    """Unpack `src` (a seekable file) as the only layer of a new image; returns the image ID."""
    head = src.read(6)
    src.seek(0)
    work = store.tmp_dir()
    try:
        if head.startswith((_XZ_MAGIC, _BZIP2_MAGIC)):  # layers are gzip or plain tar: unpack to plain once
            plain = work / "rootfs.tar"
            opener = lzma.open if head.startswith(_XZ_MAGIC) else bz2.open
            with opener(src, "rb") as unpacked, open(plain, "wb") as out:  # type: ignore[operator]
                shutil.copyfileobj(unpacked, out, 1 << 20)
            with open(plain, "rb") as f:
                meta = store.import_layer(f, None, None, oci.DOCKER_LAYER_TAR)
        elif head.startswith(ZSTD_MAGIC):
            meta = store.import_layer(decompressed(src), None, None, oci.DOCKER_LAYER_TAR)
        else:  # gzip (kept compressed, as push sends it) or plain: import_layer tells them apart
            meta = store.import_layer(src, None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    created = now_rfc3339()
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": apply_changes({}, changes),
        "rootfs": {"type": "layers", "diff_ids": [meta["diff_id"]]},
        "history": [{"created": created, "comment": message or f"Imported from {source}"}],
    }
    tags = [parse(tag)] if tag else []
    return store.add_image(json.dumps(config, separators=(",", ":")).encode(), tags)
