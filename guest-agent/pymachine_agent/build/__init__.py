"""Dockerfile builds (the legacy `POST /build` API): parser, context, cache, executor.

The API server calls one function:

    from pymachine_agent.build import build
    image_id = build(containers, store, context_fileobj, params, emit)

- `containers`: the engine's ContainerService (each RUN step is a container); `store`: its ImageStore.
- `context_fileobj`: a binary file object holding the whole request body (a tar, maybe gzip'd). Read the
  whole body before calling (moby buffers it too), e.g. into a SpooledTemporaryFile.
- `params`: the query string as a dict; values are str, or list[str] for repeated keys (`t`). Understood:
  `dockerfile`, `t`, `buildargs` (JSON), `labels` (JSON), `target`, `nocache`, `pull`, `rm`, `forcerm`, `q`,
  `networkmode`; the rest are ignored.
- `emit(obj)`: called with each JSON-stream message (`{"stream": ...}`, `{"aux": {"ID": ...}}`,
  `{"errorDetail": {...}, "error": ...}`); the server writes `json.dumps(obj) + "\\r\\n"` per call
  and flushes.
- Returns the image id (`sha256:...`), or None after a failure (which was already emitted as `errorDetail`);
  never raises for a build failure, so the HTTP status stays 200 as Docker's does once streaming started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from ..engine import ContainerService
    from ..images import ImageStore


def build(
    containers: ContainerService,
    store: ImageStore,
    context_fileobj: BinaryIO,
    params: dict[str, Any],
    emit: Callable[[dict], None],
) -> str | None:
    from .builder import run_build

    return run_build(containers, store, context_fileobj, params, emit)
