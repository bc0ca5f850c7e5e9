"""The image service: the image store (ImageStore, which the image endpoints and the builder call directly)
with what the engine adds around it: events for pulls, loads, tags and removals, which images containers
use, and `docker commit` of a container."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .. import dockerview as view
from ..events import EventBus
from ..images import ImageStore
from ..runtime import Runtime
from .records import ContainerRecords


class ImageService:
    def __init__(
        self, *, store: ImageStore, runtime: Runtime, records: ContainerRecords, events: EventBus
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.records = records
        self.events = events

    def in_use(self, image_id: str) -> list[str]:
        """The containers made from the image (they keep it from removal and prune)."""
        return self.records.image_users(image_id)

    def publish(self, action: str, ref: str, name: str) -> None:
        """An image event (pull, load, import, tag, untag, delete) for `docker events`."""
        self.events.publish("image", action, ref, {"name": name})

    def commit(
        self,
        ref: str,
        repo: str = "",
        tag: str = "",
        comment: str = "",
        author: str = "",
        changes: list[str] | None = None,
        config: dict | None = None,
        pause: bool = True,
    ) -> str:
        """`docker commit`. A running container is frozen through its cgroup for the whole commit (Docker's
        `pause=true` default), so the layer is one moment of its files; `pause=false` commits it live, and the
        upper dir is then read with no-follow fd walks (engine/commit.py) whatever the container does."""
        st = self.records.state(ref)
        with contextlib.ExitStack() as frozen:
            if pause and st.status == "running":
                self.runtime.pause(st.id)
                frozen.callback(self.runtime.unpause, st.id)
            return self._commit(st, repo, tag, comment, author, changes, config)
        raise AssertionError("unreachable")

    def _commit(
        self,
        st: Any,
        repo: str,
        tag: str,
        comment: str,
        author: str,
        changes: list[str] | None,
        config: dict | None,
    ) -> str:
        d = view.docker_of(st)
        base_config = dict(d.get("Config") or {})
        if config:
            base_config.update({k: v for k, v in config.items() if v not in (None, "", [], {})})
        target = f"{repo}:{tag or 'latest'}" if repo else None
        parent_layers = self.store.layer_dirs(d["Image"]) if d.get("Image") else []
        from .commit import committable_upper  # with build/: ~0.5 s of agent start-up under TCG

        with committable_upper(Path(st.upper_dir), parent_layers) as upper:
            image_id = self.store.commit(
                upper,
                d.get("Image"),
                {"config": base_config, "changes": changes or []},
                comment=comment,
                author=author,
                tag=target,
            )
        self.events.publish("container", "commit", st.id, {**self.records.attrs(st.id), "comment": comment})
        return image_id
