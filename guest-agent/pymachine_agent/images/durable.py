"""Layers on the disk before an image names them, and the check of layers written before that was so.

A layer is unpacked into tmp/, renamed into layers/, and then an image record (fsynced) names it. ext4 commits
names, the rename and the fsynced record within seconds but writes a file's data back up to 30 s later
(delayed allocation); a power cut, or QEMU killed, in between left an image that `docker images` lists whose
files are empty or cut short, and nothing ever looked again. So the store flushes the filesystem once before a
record names new layers (`ContentStore.flush_placed`: one syncfs per load, pull, commit or build step that
placed any, however many files). containerd does the same only when asked (its diff service's `sync_fs`, the
CRI's `image_pull_with_sync_fs`); dockerd's overlay2 never does.

A layer written that way says so in its layer.json (`FLUSHED`). At open, every layer an image names without
the mark (an agent older than the flush wrote it) is checked once: each file against the size its tar
recorded (the tar-split index, or the kept blob's headers); a whole one gets the mark, and an incomplete one
is removed with every image that uses it, each named in one warning: load or pull them again.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from typing import TYPE_CHECKING

from ..errors import ImageError
from . import tarsplit

if TYPE_CHECKING:
    from .removal import LayerUsage
    from .store import ImageStore

log = logging.getLogger("pymachine_agent.images")
FLUSHED = "flushed"  # in layer.json: its files were on the disk before any image named it


def check_unflushed(store: ImageStore, usage: LayerUsage | None = None) -> dict[str, str]:
    """At open: check each layer an image names that lacks the FLUSHED mark; mark the whole ones, remove
    the others with their images. Returns {diff_id: what is wrong} of the removed layers. `usage`: the
    records and layer.json files the sweep before read already (removal.LayerUsage)."""
    from .. import atomic
    from .removal import LayerUsage

    with store.locked():
        usage = usage or LayerUsage(store)
        users = usage.users()
        todo = [d for d in users if store.has_layer(d) and not usage.meta(d).get(FLUSHED)]
        if not todo:
            return {}
        broken = {d: why for d in todo if (why := problem(store, d))}
        whole = [d for d in todo if d not in broken]
        if whole:
            atomic.sync_filesystem(store.root)  # checked as read back: on the disk before it is marked
            for diff_id in whole:
                meta = store.layer_meta(diff_id)
                meta[FLUSHED] = True
                store._write_layer_meta(meta)
    if whole:
        log.info("checked %d layer(s) written before layers were flushed: whole", len(whole))
    for diff_id, why in broken.items():
        from . import removal

        names = []
        for image_id in dict.fromkeys(users[diff_id]):
            if store.exists(image_id):
                names += removal.forget(store, image_id)
        log.warning(
            "layer %s is incomplete on disk (%s): the machine stopped before its files were written out "
            "(QEMU killed or a power cut right after the load or pull, by an older agent); removed it and "
            "the image(s) using it: %s. Load or pull them again",
            diff_id,
            why,
            ", ".join(names),
        )
    return broken


def problem(store: ImageStore, diff_id: str) -> str | None:
    """What is wrong with the layer's unpacked files (None: each is the size its tar records)."""
    root = store.layer_root(diff_id)
    if tarsplit.exists(root):
        try:
            split = tarsplit.SplitTar(root)
            try:
                split.check()
            finally:
                split.close()
        except (ImageError, OSError) as err:
            return str(err)
        return None
    from .archive import layer_tar_stream

    try:
        stream, _size = layer_tar_stream(store, diff_id)
    except (ImageError, OSError):
        return None  # no tar kept to compare with
    sizes: dict[str, int] = {}
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                name = m.name.removeprefix("./").rstrip("/")
                if m.isreg() and not os.path.basename(name).startswith(".wh."):
                    sizes[name] = m.size
                else:  # a later entry of that name replaced the file (a hardlink keeps its target's size)
                    sizes.pop(name, None)
    except (tarfile.TarError, EOFError, OSError, ImageError) as err:
        return f"its kept blob is unreadable: {err}"
    diff = root / "diff"
    for name, size in sizes.items():
        try:
            st = os.lstat(diff / name)
        except OSError:
            continue  # not there (a later whiteout or folder took it): nothing a crash does
        if stat.S_ISREG(st.st_mode) and st.st_size != size:
            return f"{name} has {st.st_size} of its {size} bytes"
    return None
