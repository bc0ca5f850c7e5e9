"""`--cache-from IMAGE`: steps of a given image (pulled or loaded, so no local build cache knows it) count as
cache, as dockerd's legacy builder does it (its "sourced" image cache).

A step is a hit when a source image was built on the same parent: the parent's history and layers are a
prefix of the source's, and the source's next history entry was written by the same instruction (its
`created_by`: the RUN command, the config change, or for COPY/ADD the content hash of the sources, which is
why those carry `file:<hash>` there as Docker's do). The hit is the source itself when that entry is its last;
otherwise an image is made from the parent plus the source's layer for that entry (dockerd's
restoreCachedImage), so the next step can match again.
"""

from __future__ import annotations

import json
from typing import Any

from ..images import ImageNotFound


class SourcedCache:
    def __init__(self, store: Any, refs: list[str]) -> None:
        self.store = store
        self.sources: list[tuple[str, dict[str, Any]]] = []
        for ref in refs:
            try:
                image_id = store.resolve(ref)
            except ImageNotFound:
                continue  # dockerd skips a --cache-from image it does not have
            self.sources.append((image_id, store.config(image_id)))

    def lookup(self, parent_id: str | None, created_by: str, config: dict[str, Any]) -> str | None:
        """The image for this step from a source, or None. `config` is the step's resulting "config"."""
        parent = self.store.config(parent_id) if parent_id else {}
        history = list(parent.get("history") or [])
        diff_ids = list((parent.get("rootfs") or {}).get("diff_ids") or [])
        for image_id, source in self.sources:
            s_history = list(source.get("history") or [])
            s_diff_ids = list((source.get("rootfs") or {}).get("diff_ids") or [])
            n = len(history)
            if (
                len(s_history) <= n
                or s_history[:n] != history
                or s_diff_ids[: len(diff_ids)] != diff_ids
                or s_history[n].get("created_by") != created_by
            ):
                continue
            if len(s_history) == n + 1:
                return image_id
            entry = s_history[n]
            layers = list(diff_ids)
            if not entry.get("empty_layer"):
                index = sum(1 for h in s_history[:n] if not h.get("empty_layer"))
                if index >= len(s_diff_ids):
                    continue
                layers.append(s_diff_ids[index])
            restored = {
                "architecture": source.get("architecture", "amd64"),
                "os": source.get("os", "linux"),
                "created": entry.get("created", ""),
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": layers},
                "history": [*history, entry],
            }
            self.sources = [(image_id, source)]  # as dockerd: stay on the source that matched
            blob = json.dumps(restored, separators=(",", ":")).encode()
            return str(self.store.add_image(blob, parent=parent_id or ""))
        return None
