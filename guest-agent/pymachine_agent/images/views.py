"""The JSON shapes Docker's API returns for images: inspect, list (/images/json) and history."""

from __future__ import annotations

import fnmatch
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import ImageNotFound

if TYPE_CHECKING:
    from .store import ImageStore

_FRACTION = re.compile(r"(\.\d{1,6})\d*")
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created_seconds(created: str | None) -> int:
    """Unix seconds of an RFC3339 `created` (Go writes nanoseconds, Python's parser takes at most micro)."""
    if not created:
        return 0
    text = _FRACTION.sub(r"\1", created.strip()).replace("Z", "+00:00")
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def _config_section(config: dict[str, Any]) -> dict[str, Any]:
    # Docker always shows these keys; clients template on them (`{{.Config.Cmd}}`), so never omit them.
    base: dict[str, Any] = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": None,
        "Cmd": None,
        "Image": "",
        "Volumes": None,
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": None,
    }
    base.update(config.get("config") or {})
    return base


def image_size(store: ImageStore, image_id: str) -> int:
    return sum(store.layer_meta(d)["size"] for d in dict.fromkeys(store.record(image_id)["layers"]))


def inspect(store: ImageStore, image_id: str) -> dict[str, Any]:
    rec = store.record(image_id)
    config = store.config(image_id)
    tags, digests = store.refs_of(image_id)
    dirs = [str(p) for p in store.layer_dirs(image_id)]
    size = image_size(store, image_id)
    out: dict[str, Any] = {
        "Id": image_id,
        "RepoTags": [r.familiar for r in tags],
        "RepoDigests": [r.familiar for r in digests],
        "Parent": rec.get("parent", ""),
        "Comment": config.get("comment", ""),
        "Created": config.get("created", "") or ZERO_TIME,
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": _config_section(config),
        "Architecture": config.get("architecture", "amd64"),
        "Os": config.get("os", "linux"),
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {"LowerDir": ":".join(reversed(dirs))} if dirs else {},
        },
        "RootFS": {"Type": "layers", "Layers": list(rec["layers"])},
        "Metadata": {"LastTagTime": rec.get("last_tag_time") or ZERO_TIME},
    }
    if config.get("variant"):
        out["Variant"] = config["variant"]
    return out


def history(store: ImageStore, image_id: str) -> list[dict[str, Any]]:
    rec = store.record(image_id)
    config = store.config(image_id)
    tags, _ = store.refs_of(image_id)
    entries = config.get("history") or [{} for _ in rec["layers"]]
    layer_ids = iter(rec["layers"])
    rows: list[dict[str, Any]] = []
    for h in entries:
        size = 0
        if not h.get("empty_layer"):
            diff_id = next(layer_ids, None)
            size = store.layer_meta(diff_id)["size"] if diff_id else 0
        rows.append(
            {
                "Id": "<missing>",
                "Created": created_seconds(h.get("created")),
                "CreatedBy": h.get("created_by", ""),
                "Tags": None,
                "Size": size,
                "Comment": h.get("comment", ""),
            }
        )
    rows.reverse()
    if rows:
        rows[0]["Id"] = image_id
        rows[0]["Tags"] = [r.familiar for r in tags] or None
    return rows


def _values(filters: dict[str, Any], key: str) -> list[str]:
    # The Go CLI sends {"key": {"v": true}}, docker-py {"key": ["v"]}: accept both.
    value = filters.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        return [k for k, v in value.items() if v]
    if isinstance(value, str):
        return [value]
    return list(value)


def _matches(
    filters: dict[str, Any], summary: dict[str, Any], labels: dict[str, str], dangling: bool
) -> bool:
    for want in _values(filters, "dangling"):
        if (want.lower() in ("1", "true")) != dangling:
            return False
    refs = _values(filters, "reference")
    if refs:
        names = summary["RepoTags"]
        ok = any(
            fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.rsplit(":", 1)[0], pat)
            for n in names
            for pat in refs
        )
        if not ok:
            return False
    for want in _values(filters, "label"):
        key, eq, val = want.partition("=")
        if key not in labels or (eq and labels[key] != val):
            return False
    return True


def parents(store: ImageStore) -> set[str]:
    """IDs of the images that are the parent of another stored image (the builder's step images)."""
    found = set()
    for image_id in store.image_ids():
        try:
            parent = store.record(image_id).get("parent") or ""
        except ImageNotFound:  # deleted meanwhile
            continue
        if parent:
            found.add(parent)
    return found


def image_list(store: ImageStore, filters: dict[str, Any], all_images: bool = False) -> list[dict[str, Any]]:
    """`GET /images/json`. As Docker, an untagged image that is the parent of another (an intermediate build
    step) is hidden unless `all_images` (`docker images -a`), and only an untagged image without children is
    dangling, so `dangling=true` never lists the steps the build cache needs."""
    rows = []
    has_children = parents(store)
    for image_id in store.image_ids():
        try:
            rec = store.record(image_id)
            config = store.config(image_id)
        except ImageNotFound:  # deleted meanwhile, or its record unreadable (logged)
            continue
        tags, digests = store.refs_of(image_id)
        if not tags and not digests and image_id in has_children and not all_images:
            continue
        labels = (config.get("config") or {}).get("Labels") or {}
        summary = {
            "Id": image_id,
            "ParentId": rec.get("parent", ""),
            "RepoTags": [r.familiar for r in tags],
            "RepoDigests": [r.familiar for r in digests],
            "Created": created_seconds(config.get("created")),
            "Size": image_size(store, image_id),
            "SharedSize": -1,
            "Labels": labels,
            "Containers": -1,
        }
        summary["VirtualSize"] = summary["Size"]
        if _matches(filters, summary, labels, not tags and image_id not in has_children):
            rows.append(summary)
    rows.sort(key=lambda r: (-r["Created"], r["Id"]))
    return rows


def now_rfc3339() -> str:
    return rfc3339(time.time())
