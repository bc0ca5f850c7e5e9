"""`/images/*`, `/build`, `/commit`: the image store behind Docker's endpoints."""

from __future__ import annotations

import base64
import json
import queue
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from ..errors import client_message
from . import bodies
from .http import BodyFile, ChunkedWriter, ClientGone, HTTPError, Request
from .server import Router

if TYPE_CHECKING:
    from ..engine import ContainerService, ImageService


def decode_auth(value: str | None) -> dict[str, Any] | None:
    """X-Registry-Auth: base64url JSON (padding optional)."""
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw or b"{}")
        return data if isinstance(data, dict) and data else None
    except ValueError:
        return None


def _stream_job(req: Request, job: Any) -> None:
    """Run `job(progress)` in a thread and stream its progress dicts as JSON lines; errors become Docker's
    mid-stream `errorDetail` once the 200 is out (and a plain status before)."""
    messages: queue.Queue[Any] = queue.Queue()
    done = object()

    def runner() -> None:
        try:
            result = job(messages.put)
            messages.put((done, result, None))
        except Exception as exc:
            messages.put((done, None, exc))

    threading.Thread(target=runner, daemon=True).start()
    first = messages.get()
    if isinstance(first, tuple) and first and first[0] is done and first[2] is not None:
        raise first[2]  # failed before any progress: a real status code (404 for pull of a missing image)
    out = req.conn.stream(200, "application/json")
    item = first
    try:
        while True:
            if isinstance(item, tuple) and item and item[0] is done:
                exc = item[2]
                if exc is not None:
                    msg = client_message(exc)
                    out.write_json({"errorDetail": {"message": msg}, "error": msg})
                out.close()
                return
            out.write_json(item)
            item = messages.get()
    except ClientGone:
        pass


def _fetch(url: str, out: Any) -> None:
    """The body of `url` (http/https only) into `out`; a failure is the client's 400 with the reason."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise HTTPError(400, f"invalid import source {url!r}: use - or an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise HTTPError(400, f"import from {url}: {getattr(exc, 'reason', exc)}") from None


def _spool_body(req: Request, spool: Any) -> None:
    """The whole request body into `spool`. A write that fails (no space left) is raised only once the body
    is read to its end: a reply sent while the client still uploads reaches it as a broken pipe instead of
    the reason (`docker load` on a full disk said "write: broken pipe")."""
    failed: OSError | None = None
    for piece in req.iter_body():
        if failed is None:
            try:
                spool.write(piece)
            except OSError as exc:
                failed = exc
    if failed is not None:
        raise failed


class _TarResponse:
    """`docker save`'s body: the 200 goes out with the first byte (a failure before it is still a status),
    then chunks of up to 1 MiB; `sendfile` sends a stored blob from the kernel's page cache as one chunk."""

    def __init__(self, req: Request) -> None:
        self._req = req
        self._out: ChunkedWriter | None = None
        self._buf: list[bytes] = []
        self._size = 0

    def _stream(self) -> ChunkedWriter:
        if self._out is None:
            self._out = self._req.conn.stream(200, "application/x-tar")
        return self._out

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._stream().write(b"".join(self._buf))
            self._buf, self._size = [], 0

    def sendfile(self, fd: int, count: int) -> None:
        self.flush()
        self._stream().sendfile(fd, count)

    def close(self) -> None:
        self.flush()
        self._stream().close()


def register(router: Router, images: ImageService, containers: ContainerService) -> None:  # noqa: C901
    """`containers`: the builder runs each RUN step in a container."""
    r = router.route
    store = images.store

    @r("GET", "/images/json")
    def list_(req: Request) -> tuple[int, list]:
        filters = req.filters()
        found = store.list(filters, all_images=req.query.get("all") in ("1", "true"))
        for img in found:
            img["Containers"] = len(images.in_use(img["Id"]))
        return 200, found

    @r("POST", "/images/create")
    def create(req: Request) -> None:
        from_image = req.query.get("fromImage", "")
        if not from_image:
            if req.query.get("fromSrc"):
                return _import(req)
            raise HTTPError(400, "fromImage is required")
        tag = req.query.get("tag", "")
        ref = from_image
        if tag:
            ref = f"{from_image}@{tag}" if tag.startswith("sha256:") else f"{from_image}:{tag}"
        auth = decode_auth(req.headers.get("X-Registry-Auth"))
        req.drain()

        def pull(progress: Any) -> str:
            image_id = store.pull(ref, auth=auth, progress=progress)
            images.publish("pull", ref, ref)
            return image_id

        _stream_job(req, pull)

    def _import(req: Request) -> None:
        """`docker import FILE|URL|- [REPO[:TAG]]`: fromSrc `-` sends the tar as the body; a URL is fetched
        by the engine (from inside the machine), as dockerd does."""
        source = req.query["fromSrc"]
        repo, tag = req.query.get("repo", ""), req.query.get("tag", "")
        ref = f"{repo}:{tag}" if repo and tag else repo
        with tempfile.TemporaryFile(dir=store.spool_dir()) as spool:
            if source == "-":
                _spool_body(req, spool)
            else:
                req.drain()
                _fetch(source, spool)
            spool.seek(0)
            image_id = store.import_rootfs(
                spool,
                source=source,
                tag=ref,
                message=req.query.get("message", ""),
                changes=req.query_all.get("changes", []),
            )
        images.publish("import", image_id, ref or image_id)
        out = req.conn.stream(200, "application/json")
        out.write_json({"status": image_id})
        out.close()

    @r("POST", "/images/load")
    def load(req: Request) -> None:
        body = BodyFile(req)
        try:
            loaded = store.load(body)  # unpacks as the body arrives (images/staging.py)
        finally:
            # the tar's end marker is not the body's end (record padding, the last chunk): reply only once the
            # client has sent it all, or the rest is read as the next request and a client still sending
            # gets a broken pipe instead of the reply (see _spool_body)
            body.drain()
        for name in loaded:
            images.publish("load", name, name)
        out = req.conn.stream(200, "application/json")
        for name in loaded:
            kind = "Loaded image ID" if name.startswith("sha256:") else "Loaded image"
            out.write_json({"stream": f"{kind}: {name}\n"})
        out.close()

    @r("GET", "/images/get")
    def save_many(req: Request) -> None:
        _save(req, req.query_all.get("names", []))

    @r("GET", "/images/{name:path}/get")
    def save_one(req: Request, name: str) -> None:
        _save(req, [name])

    def _save(req: Request, names: list[str]) -> None:
        if not names:
            raise HTTPError(400, "no images given")
        for n in names:
            store.resolve(n)  # 404 before the stream starts
        out = _TarResponse(req)
        try:
            store.save(names, out)  # streamed as made: a failure before its first byte is still a status
            out.close()
        except ClientGone:
            pass

    @r("POST", "/images/prune")
    def prune(req: Request) -> tuple[int, dict]:
        filters = req.filters()
        dangling = (filters.get("dangling") or ["true"])[0].lower() in ("1", "true")
        return 200, store.prune(dangling_only=dangling, in_use=images.in_use)

    @r("GET", "/images/{name:path}/json")
    def inspect(req: Request, name: str) -> tuple[int, dict]:
        return 200, store.inspect(name)

    @r("GET", "/images/{name:path}/history")
    def history(req: Request, name: str) -> tuple[int, list]:
        return 200, store.history(name)

    @r("POST", "/images/{name:path}/tag")
    def tag(req: Request, name: str) -> int:
        repo = req.query.get("repo", "")
        if not repo:
            raise HTTPError(400, "repository name must have at least one component")
        dst = f"{repo}:{req.query['tag']}" if req.query.get("tag") else repo
        store.tag(name, dst)
        images.publish("tag", store.resolve(name), dst)
        return 201

    @r("POST", "/images/{name:path}/push")
    def push(req: Request, name: str) -> None:
        ref = f"{name}:{req.query['tag']}" if req.query.get("tag") else name
        auth = decode_auth(req.headers.get("X-Registry-Auth"))
        req.drain()
        _stream_job(req, lambda progress: store.push(ref, auth=auth, progress=progress))

    @r("DELETE", "/images/{name:path}")
    def remove(req: Request, name: str) -> tuple[int, list]:
        result = store.remove(
            name, force=req.qbool("force"), in_use=images.in_use, prune=not req.qbool("noprune")
        )
        for item in result:
            for action, value in item.items():
                images.publish(
                    action.lower().replace("untagged", "untag").replace("deleted", "delete"), value, value
                )
        return 200, result

    @r("POST", "/commit")
    def commit(req: Request) -> tuple[int, dict]:
        image_id = images.commit(
            req.query.get("container", ""),
            repo=req.query.get("repo", ""),
            tag=req.query.get("tag", ""),
            comment=req.query.get("comment", ""),
            author=req.query.get("author", ""),
            changes=req.query_all.get("changes", []),
            config=req.json(bodies.COMMIT_CONFIG) or None,
            pause=req.qbool("pause", default=True),
        )
        return 201, {"Id": image_id}

    @r("POST", "/auth")
    def auth(req: Request) -> tuple[int, dict]:
        # `docker login`: the store checks the credentials against the registry's /v2/
        return 200, store.login(req.json(bodies.AUTH))

    @r("POST", "/build/prune")
    def build_prune(req: Request) -> tuple[int, dict]:
        # the legacy builder keeps its cache as ordinary images: nothing separate to reclaim
        return 200, {"CachesDeleted": [], "SpaceReclaimed": 0}

    @r("POST", "/build")
    def build(req: Request) -> None:
        try:
            from .. import build as builder
        except ImportError:
            raise HTTPError(501, "docker build is not available in this engine yet") from None
        params: dict[str, Any] = {k: (v if len(v) > 1 else v[0]) for k, v in req.query_all.items()}
        with tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=store.spool_dir()) as spool:
            _spool_body(req, spool)  # moby reads the whole context before answering
            spool.seek(0)
            out = req.conn.stream(200, "application/json")

            def emit(obj: dict) -> None:
                out.write_json(obj)

            try:
                builder.build(containers, store, spool, params, emit)
            except ClientGone:
                return
            except Exception as exc:  # a crash in the builder still ends the stream the Docker way
                msg = f"{type(exc).__name__}: {exc}"
                out.write_json({"errorDetail": {"message": msg}, "error": msg})
            out.close()
