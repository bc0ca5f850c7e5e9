"""Image transfers against a machine's engine, written once for the CLI and the desktop app: reference
parsing, pull, load, save, build, and the demultiplexing of attach/exec/log streams. Each reports typed
progress (`hostvm.progress`) to a callback and raises PymachineError on failure."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import containers
from .errors import PymachineError, UsageError
from .progress import BuildOutput, ByteProgress, LayerProgress, Progress, quiet

PULL_POLICIES = ("missing", "always", "never")
PULL_HINT = (
    "a machine reaches only the registries you run (e.g. localhost:5000/...); "
    "or load the image: pymachine load -i FILE"
)


@dataclass(frozen=True)
class ImageRef:
    """`[registry[:port]/]repository[:tag][@digest]`, split as docker-py's `parse_repository_tag` does
    (a registry port is not a tag: `localhost:5000/app` has none)."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def pull_tag(self) -> str:
        """What the pull API's `tag` parameter takes: the digest, else the tag, else `latest`."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return self.repository + tag + (f"@{self.digest}" if self.digest else "")

    @property
    def name(self) -> str:
        """As the engine lists it once pulled: `repo:tag` (`latest` by default), or `repo@digest`."""
        if self.digest and not self.tag:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"


def parse_reference(reference: str) -> ImageRef:
    if not reference or reference != reference.strip() or any(c.isspace() for c in reference):
        raise UsageError(f"invalid reference format: '{reference}'", hint="name[:tag][@digest]")
    from docker.utils import parse_repository_tag  # docker-py (0.1 s) only when a reference is parsed

    repo, tag = parse_repository_tag(reference)
    digest = None
    if tag and ":" in tag and "@" in reference:  # docker-py hands a digest back in the tag slot
        digest, tag = tag, None
        head, sep, maybe_tag = repo.rpartition(":")
        if sep and "/" not in maybe_tag:  # `name:tag@digest`
            repo, tag = head, maybe_tag
    if not repo or repo != repo.lower() or repo.endswith("/") or "//" in repo:
        raise UsageError(
            f"invalid reference format: '{reference}'" + _lower_note(repo),
            hint="name[:tag][@digest], e.g. localhost:5000/app:v1",
        )
    return ImageRef(repo, tag, digest)


def _lower_note(repo: str) -> str:
    return " (repository name must be lowercase)" if repo and repo != repo.lower() else ""


# -- pull ---------------------------------------------------------------------------------------------------
def pull_events(messages: Iterable[dict[str, Any]], reference: str, say: Progress) -> None:
    """The engine's pull stream → LayerProgress per layer message, notes for the others; `error` raises."""
    for msg in messages:
        if "error" in msg or "errorDetail" in msg:
            detail = msg.get("errorDetail") or {}
            raise PymachineError(
                f"pulling {reference}: {msg.get('error') or detail.get('message')}",
                hint=PULL_HINT,
            )
        status, layer = str(msg.get("status") or ""), str(msg.get("id") or "")
        detail = msg.get("progressDetail") or {}
        if layer and status and not status.startswith(("Pulling from", "Digest:", "Status:")):
            say(LayerProgress(layer, status, int(detail.get("current") or 0), int(detail.get("total") or 0)))
        elif status:
            say(f"{layer}: {status}" if layer else status)


def pull(dc: Any, reference: str, progress: Progress | None = None) -> list[str]:
    """Pull `reference` (the builtin pymachine/* images are built here and loaded). Returns the names."""
    say = progress or quiet
    builtin = containers.builtin_name(reference)
    if builtin:
        return load_builtin(dc, builtin, say)
    ref = parse_reference(reference)
    with containers.api_errors(f"pulling {reference}", hint=PULL_HINT):
        pull_events(dc.api.pull(ref.repository, tag=ref.pull_tag, stream=True, decode=True), reference, say)
    return [ref.name]


def image_present(dc: Any, reference: str) -> bool:
    import docker.errors

    try:
        dc.images.get(reference)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_image(dc: Any, reference: str, policy: str = "missing", progress: Progress | None = None) -> None:
    """`docker run --pull`: missing (pull when absent), always, never (fail when absent)."""
    if policy not in PULL_POLICIES:
        raise UsageError(f"--pull {policy}: must be one of {', '.join(PULL_POLICIES)}")
    say = progress or quiet
    if policy != "always":
        with containers.api_errors():
            if image_present(dc, reference):
                return
        if policy == "never":
            from .errors import NotFoundError

            raise NotFoundError(
                f"No such image: {reference}", hint="--pull never: pull or load it first (pymachine pull)"
            )
        say(f"Unable to find image '{reference}' locally")
    pull(dc, reference, say)


LISTED_HINT = "see 'pymachine images' for the images the machine has"
REMOVE_MISSING_HINT = f"nothing to remove: {LISTED_HINT}"


def remove(dc: Any, reference: str, force: bool = False) -> list[tuple[str, str]]:
    """`docker rmi`: untag `reference` (the image goes with its last tag). Returns the engine's report as
    ("Untagged" | "Deleted", name or id) pairs. A tag that is already gone is docker's "No such image", with
    no advice to load or pull it: there is nothing to do."""
    with containers.api_errors(f"removing {reference}", missing=REMOVE_MISSING_HINT):
        report = dc.api.remove_image(reference, force=force)
    return [(kind, str(value)) for item in report or () for kind, value in item.items()]


# -- load / save --------------------------------------------------------------------------------------------
class _CountingReader:
    """A file that reports how much of it has been read: requests sends it with Content-Length (from
    `fileno`) and reads it in blocks."""

    def __init__(self, fh: BinaryIO, name: str, total: int, say: Progress) -> None:
        self.fh, self.name, self.total, self.say, self.done = fh, name, total, say, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.done += len(data)
        self.say(ByteProgress("load", self.name, self.done, self.total))
        return data

    mode = "rb"  # requests checks it before it trusts fileno's size

    def fileno(self) -> int:
        return self.fh.fileno()

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)


def load(dc: Any, path: str, progress: Progress | None = None) -> list[str]:
    """`docker load -i`: returns the loaded image tags (or ids)."""
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    total = os.path.getsize(path)
    with open(path, "rb") as fh, containers.api_errors(f"loading {path}"):
        images = dc.images.load(_CountingReader(fh, os.path.basename(path), total, progress or quiet))
    return [img.tags[0] if img.tags else img.short_id for img in images]


def load_builtin(dc: Any, name: str, progress: Progress | None = None) -> list[str]:
    from .container_images import ensure_container_image

    say = progress or quiet
    say(f"building the builtin image {name}")
    tarball = ensure_container_image(name, say)
    say(f"loading {name} into the engine")
    return load(dc, str(tarball), say)


def save(dc: Any, images: list[str], out: BinaryIO, progress: Progress | None = None) -> int:
    """`docker save`: the images as one docker-archive tarball written to `out`; returns its size."""
    say = progress or quiet
    name = ", ".join(images)
    with containers.api_errors(f"saving {name}", missing=LISTED_HINT):  # it is there to save, or a typo
        total = sum(int(dc.images.get(i).attrs.get("Size") or 0) for i in images)  # an estimate: layers
        done = 0
        for chunk in dc.api.get_image(images[0]) if len(images) == 1 else _get_images(dc, images):
            out.write(chunk)
            done += len(chunk)
            say(ByteProgress("save", name, done, max(total, done)))
    return done


def _get_images(dc: Any, images: list[str]) -> Iterator[bytes]:
    res = dc.api._get(dc.api._url("/images/get"), params={"names": images}, stream=True)
    dc.api._raise_for_status(res)
    yield from res.iter_content(chunk_size=2 << 20)


# -- build --------------------------------------------------------------------------------------------------
def follow_build(events: Iterable[dict[str, Any]], say: Progress) -> str | None:
    """A build's stream → BuildOutput per `stream` piece, notes for `status`; returns the image id
    (`aux.ID`); an `error` ends the build as a PymachineError."""
    image_id = None
    for event in events:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            raise PymachineError(
                f"build failed: {(event.get('error') or detail.get('message') or 'unknown error').strip()}",
                hint="fix the step above and build again (finished steps come from the cache)",
            )
        if event.get("stream"):
            say(BuildOutput(str(event["stream"])))
        elif event.get("status"):
            say(str(event["status"]))
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    return image_id


def build(dc: Any, request: dict[str, Any], progress: Progress | None = None) -> str:
    """docker-py's `api.build(**request)` (decode=True), streamed; returns the image id."""
    with containers.api_errors("building"):
        image_id = follow_build(dc.api.build(**request), progress or quiet)
    if image_id is None:
        raise PymachineError("the engine finished the build without naming an image")
    return image_id


# -- streams ------------------------------------------------------------------------------------------------
def demux(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Docker's multiplexed stream frames (8-byte header: stream, 0, 0, 0, big-endian length) → (stream,
    payload) pairs, and the incomplete rest."""
    out = []
    while len(buf) >= 8:
        size = struct.unpack(">I", buf[4:8])[0]
        if len(buf) < 8 + size:
            break
        out.append((buf[0], buf[8 : 8 + size]))
        buf = buf[8 + size :]
    return out, buf
