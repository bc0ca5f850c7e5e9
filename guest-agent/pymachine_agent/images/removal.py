"""`docker rmi` and `docker image prune` semantics over the store's records."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from ..errors import ImageConflict, InvalidReference
from .reference import Reference, is_id_prefix, is_image_id, parse, short_id

if TYPE_CHECKING:
    from .store import ImageStore, InUse


def _by_name(store: ImageStore, ref: str) -> Reference | None:
    """The reference `ref` names when it resolved through a tag/digest (not as an ID or ID prefix)."""
    if is_image_id(ref):
        return None
    try:
        parsed = parse(ref)
    except InvalidReference:
        return None
    repos = store.repositories()
    if parsed.digest:
        return (
            parsed.with_digest(parsed.digest)
            if str(parsed.with_digest(parsed.digest)) in repos["digests"]
            else None
        )
    if str(parsed) in repos["tags"]:
        return parsed
    return None if is_id_prefix(ref) else parsed


def _untag(store: ImageStore, refs: list[Reference]) -> list[dict[str, str]]:
    with store.locked():
        repos = store.repositories()
        for r in refs:
            repos["digests" if r.digest else "tags"].pop(str(r), None)
        store._write_repositories(repos)
    return [{"Untagged": r.familiar} for r in refs]


def remove(
    store: ImageStore, ref: str, force: bool, in_use: InUse | None, prune: bool = True
) -> list[dict[str, str]]:
    image_id = store.resolve(ref)
    users = list(in_use(image_id)) if in_use else []
    tags, digests = store.refs_of(image_id)
    named = _by_name(store, ref)
    records: list[dict[str, str]] = []
    if named is not None:
        others = [r for r in tags + digests if str(r) != str(named)]
        remaining_tags = [r for r in tags if str(r) != str(named)]
        if not remaining_tags and users and not force:
            raise ImageConflict(
                f'conflict: unable to remove repository reference "{named.familiar}" (must force) - '
                f"container {users[0][:12]} is using its referenced image {short_id(image_id)}"
            )
        doomed = [named]
        if not remaining_tags:
            # The last tag of the image: its digest references go with it, as `docker rmi` prints them.
            doomed += [r for r in others if r.digest]
            others = []
        records += _untag(store, doomed)
        if others:
            return records
    else:
        repos = {r.name for r in tags + digests}
        if len(repos) > 1 and not force:
            raise ImageConflict(
                f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        if users and not force:
            raise ImageConflict(
                f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                f"image is being used by container {users[0][:12]}"
            )
        records += _untag(store, tags + digests)
    if users:
        return records  # forced: names are gone, files stay until the last container using them is removed
    parent = store.record(image_id).get("parent") or ""
    store.delete_image(image_id)
    records.append({"Deleted": image_id})
    if prune:
        records += _prune_parents(store, parent, in_use)
    return records


def forget(store: ImageStore, image_id: str) -> list[str]:
    """Untag and delete `image_id` whatever uses it (its layer is gone bad: images/durable.py); the names it
    had (its short ID if none)."""
    tags, digests = store.refs_of(image_id)
    _untag(store, tags + digests)
    store.delete_image(image_id)
    return [r.familiar for r in tags] or [short_id(image_id)]


def _prune_parents(store: ImageStore, parent: str, in_use: InUse | None) -> list[dict[str, str]]:
    """dockerd's rmi (unless `noprune`): the build's intermediate images above a deleted image go too, one
    by one up the chain, while each has no name, no other child image and no container."""
    records: list[dict[str, str]] = []
    while parent and store.exists(parent):
        tags, digests = store.refs_of(parent)
        children = [i for i in store.image_ids() if (store.record(i).get("parent") or "") == parent]
        if tags or digests or children or (in_use and list(in_use(parent))):
            break
        grandparent = store.record(parent).get("parent") or ""
        store.delete_image(parent)
        records.append({"Deleted": parent})
        parent = grandparent
    return records


def _drop_layer(store: ImageStore, diff_id: str) -> int:
    meta = store.layer_meta(diff_id) if store.has_layer(diff_id) else {"size": 0, "blobs": {}}
    for digest in meta["blobs"]:
        store.blob_path(digest).unlink(missing_ok=True)
    hexd = diff_id.removeprefix("sha256:")
    for name in (hexd[:20], hexd):
        link = store.root / "l" / name
        if os.path.islink(link) and os.readlink(link) == f"../layers/{hexd}/diff":
            link.unlink()
    # rename first, so a crash mid-delete never leaves a half-deleted layer that looks complete
    doomed = store.root / "tmp" / f"deleting-{diff_id.removeprefix('sha256:')}"
    os.rename(store.layer_root(diff_id), doomed)
    shutil.rmtree(doomed)
    return int(meta["size"])


def delete_image(store: ImageStore, image_id: str) -> int:
    with store.locked():
        rec = store.record(image_id)
        store._image_path(image_id).unlink()
        store.blob_path(image_id).unlink(missing_ok=True)
        used = {d for other in store.image_ids() for d in store.record(other)["layers"]}
        return sum(_drop_layer(store, d) for d in dict.fromkeys(rec["layers"]) if d not in used)


class LayerUsage:
    """Which images use which layer, and the layers' layer.json, each file read once: the checks the store
    makes when it opens (`sweep`, then `durable.check_unflushed`) share one, where each read every image
    record and layer.json again (twice the reads at every agent start). It is a snapshot: share it only
    between steps that change no image record and no kept layer's layer.json (sweep deletes unused layers)."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self._users: dict[str, list[str]] | None = None
        self._meta: dict[str, dict[str, Any]] = {}

    def users(self) -> dict[str, list[str]]:
        """{diff_id: [IDs of the images naming it]}, in the order of `image_ids()` and their layers."""
        if self._users is None:
            users: dict[str, list[str]] = {}
            for image_id in self.store.image_ids():
                for diff_id in self.store.record(image_id)["layers"]:
                    users.setdefault(diff_id, []).append(image_id)
            self._users = users
        return self._users

    def meta(self, diff_id: str) -> dict[str, Any]:
        if diff_id not in self._meta:
            self._meta[diff_id] = self.store.layer_meta(diff_id)
        return self._meta[diff_id]


def sweep(store: ImageStore, usage: LayerUsage | None = None) -> int:
    """Delete layers and blobs no image refers to (left by a failed load or pull, or a crash); bytes freed.
    Skipped while an import runs in this process: its fresh layers are not referenced yet."""
    with store.locked():
        if store.importing_now:
            return 0
        usage = usage or LayerUsage(store)
        used = usage.users()
        freed = 0
        for path in (store.root / "layers").iterdir():
            diff_id = "sha256:" + path.name
            if diff_id not in used:
                freed += _drop_layer(store, diff_id)
        # blobs nothing refers to: a config written just before a crash, a blob of a dropped layer
        kept = {i.removeprefix("sha256:") for i in store.image_ids()}
        for path in (store.root / "layers").iterdir():
            kept.update(d.removeprefix("sha256:") for d in usage.meta("sha256:" + path.name)["blobs"])
        for blob in (store.root / "blobs" / "sha256").iterdir():
            if blob.name not in kept:
                freed += blob.stat().st_size
                blob.unlink()
        return freed


def prune(store: ImageStore, dangling_only: bool, in_use: InUse | None) -> dict[str, Any]:
    deleted: list[dict[str, str]] = []
    reclaimed = 0
    kept: set[str] = set()  # used by a container, or tagged under dangling_only: never deleted this round
    # Repeat until nothing changes: deleting a leaf can leave its (untagged) parent childless, which Docker
    # then deletes too; a parent some kept image builds on stays, as it is that image's build cache.
    while True:
        with store.locked():
            ids = store.image_ids()
            children = {store.record(i).get("parent") or "" for i in ids}
        doomed = []
        for image_id in ids:
            if image_id in kept or image_id in children:
                continue
            if (in_use and list(in_use(image_id))) or (dangling_only and store.refs_of(image_id)[0]):
                kept.add(image_id)
                continue
            doomed.append(image_id)
        if not doomed:
            break
        for image_id in doomed:
            tags, digests = store.refs_of(image_id)
            deleted += _untag(store, tags + digests)
            reclaimed += store.delete_image(image_id)
            deleted.append({"Deleted": image_id})
    reclaimed += sweep(store)
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}
