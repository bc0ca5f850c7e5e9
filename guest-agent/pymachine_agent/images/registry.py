"""`docker pull` / `docker push` against OCI distribution registries.

Pull: manifest (an index or manifest list picks linux/amd64), config, then each layer not yet unpacked; every
manifest and blob is checked against its digest, every layer against its diff_id. Push: blobs the registry
lacks (monolithic upload: POST then PUT ?digest=), the config, then a Docker schema2 manifest under the tag.
Progress messages are the ones Docker streams (`Pulling fs layer`, `Downloading`, `Pull complete`, …).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import shutil
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import digest as digest_
from ..errors import DigestMismatch, ImageError, ImageNotFound, RegistryError
from . import oci
from .reference import Reference, short_id
from .regclient import RegistryClient, Response, registry_error_text

if TYPE_CHECKING:
    from .store import ImageStore, Progress

_PROGRESS_STEP = 512 * 1024
MANIFEST_LIMIT = 4 << 20  # Docker's own cap on a manifest's size
CONFIG_LIMIT = 16 << 20


def client_for(store: ImageStore, ref: Reference, auth: dict[str, Any] | None) -> RegistryClient:
    host = ref.registry_host
    return RegistryClient(host, insecure=ref.insecure or host in store.insecure_registries, auth=auth or None)


def _scope(ref: Reference, push: bool = False) -> str:
    return f"repository:{ref.path}:{'pull,push' if push else 'pull'}"


def _check(resp: Response, ok: tuple[int, ...], what: str, ref: Reference) -> None:
    if resp.status in ok:
        return
    text = registry_error_text(resp.read())
    if resp.status == 401 or resp.status == 403:
        raise RegistryError(
            f"pull access denied for {ref.familiar_name}, repository does not exist or may require "
            f"'docker login': {text or 'denied'}",
            resp.status,
        )
    if resp.status == 404:
        raise RegistryError(f"{what} for {ref.familiar} not found: {text or 'not found'}", 404)
    raise RegistryError(f"{what} for {ref.familiar}: registry answered {resp.status}: {text}", 500)


def _get_manifest(client: RegistryClient, ref: Reference, reference: str) -> tuple[bytes, str, str]:
    resp = client.request(
        "GET", f"/v2/{ref.path}/manifests/{reference}", _scope(ref), headers={"Accept": oci.ACCEPT}
    )
    _check(resp, (200,), "manifest", ref)
    header_digest = resp.headers.get("Docker-Content-Digest")
    media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
    body = resp.read_limited(MANIFEST_LIMIT, f"the manifest of {ref.familiar}")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    expected = reference if reference.startswith("sha256:") else header_digest
    if expected and expected.startswith("sha256:") and digest != expected:
        raise DigestMismatch(f"manifest {ref.familiar}", expected, digest)
    doc = json.loads(body)
    oci.check_descriptors(doc)
    return body, oci.media_type_of(doc, media_type) or media_type, digest


def _get_blob(client: RegistryClient, ref: Reference, digest: str, size: int | None) -> bytes:
    resp = client.request("GET", f"/v2/{ref.path}/blobs/{digest}", _scope(ref))
    _check(resp, (200,), f"blob {digest}", ref)
    data = resp.read_limited(min(size, CONFIG_LIMIT) if size else CONFIG_LIMIT, f"blob {digest}")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise DigestMismatch(f"blob {digest}", digest, actual)
    return data


def _download_layer(
    store: ImageStore,
    client: RegistryClient,
    ref: Reference,
    desc: dict[str, Any],
    diff_id: str,
    progress: Progress,
) -> None:
    sid, total = short_id(desc["digest"]), int(desc.get("size", 0))
    resp = client.request("GET", f"/v2/{ref.path}/blobs/{desc['digest']}", _scope(ref))
    _check(resp, (200,), f"layer {desc['digest']}", ref)
    done = [0, 0]

    def on_chunk(n: int) -> None:
        done[0] += n
        if done[0] - done[1] >= _PROGRESS_STEP or done[0] == total:
            done[1] = done[0]
            progress(
                {"status": "Downloading", "progressDetail": {"current": done[0], "total": total}, "id": sid}
            )

    def downloaded() -> None:
        progress({"status": "Verifying Checksum", "progressDetail": {}, "id": sid})
        progress({"status": "Download complete", "progressDetail": {}, "id": sid})
        progress({"status": "Extracting", "progressDetail": {"current": total, "total": total}, "id": sid})

    try:
        store.import_layer(
            resp.stream, diff_id, desc["digest"], desc.get("mediaType"), on_chunk, downloaded, total or None
        )
    except (ConnectionError, TimeoutError, http.client.HTTPException) as err:  # the connection broke mid-blob
        raise RegistryError(
            f"download of layer {desc['digest']} from {client.host} was interrupted: {err!r}"
        ) from err
    finally:
        resp.close()
    progress({"status": "Pull complete", "progressDetail": {}, "id": sid})


def pull(store: ImageStore, ref: Reference, auth: dict[str, Any] | None, progress: Progress) -> str:
    client = client_for(store, ref, auth)
    reference = ref.digest or ref.tag or "latest"
    # The first message only once the manifest is there, as moby does: a missing image or a refused login
    # is then an error status the API can still answer with, not a message inside a 200 stream.
    body, media_type, top_digest = _get_manifest(client, ref, reference)
    progress({"status": f"Pulling from {ref.familiar_name}", "id": ref.tag or ref.digest})
    manifest = json.loads(body)
    if media_type in oci.INDEX_TYPES:
        desc = oci.choose_platform(manifest, ref.familiar)
        body, media_type, _ = _get_manifest(client, ref, desc["digest"])
        manifest = json.loads(body)
    if media_type not in oci.MANIFEST_TYPES:
        raise RegistryError(
            f"unsupported manifest type {media_type!r} for {ref.familiar} (schema 1 images are not supported)"
        )
    layer_descs = manifest.get("layers", [])
    oci.layer_media_types(manifest)
    config_bytes = _get_blob(client, ref, manifest["config"]["digest"], manifest["config"].get("size"))
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(layer_descs):
        raise ImageError(
            f"{ref.familiar}: the config lists {len(diff_ids)} layers, the manifest {len(layer_descs)}"
        )
    todo = []
    for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        if store.layer_has_blob(diff_id):
            progress({"status": "Already exists", "progressDetail": {}, "id": short_id(desc["digest"])})
        else:
            progress({"status": "Pulling fs layer", "progressDetail": {}, "id": short_id(desc["digest"])})
            todo.append((desc, diff_id))
    for desc, diff_id in todo:
        _download_layer(store, client, ref, desc, diff_id, progress)
    previous = _current(store, ref)
    image_id = store.add_image(config_bytes, [ref] if ref.tag else [], [ref.with_digest(top_digest)])
    progress({"status": f"Digest: {top_digest}"})
    if previous == image_id:
        progress({"status": f"Status: Image is up to date for {ref.familiar}"})
    else:
        progress({"status": f"Status: Downloaded newer image for {ref.familiar}"})
    return image_id


def _current(store: ImageStore, ref: Reference) -> str | None:
    try:
        return store.resolve(str(ref))
    except ImageNotFound:
        return None


# ---- push ------------------------------------------------------------------------------------------


def _gzip_blob(store: ImageStore, diff_id: str) -> tuple[str, str, int]:
    """(digest, media type, size) of a compressed blob of this layer, compressing the tar once if needed."""
    meta = store.layer_meta(diff_id)
    for digest, media_type in meta["blobs"].items():
        if digest != diff_id and store.has_blob(digest):
            return digest, media_type, store.blob_path(digest).stat().st_size
    from .archive import layer_tar_stream

    work = store.tmp_dir()
    try:
        tmp = work / "blob.gz"
        src, _size = layer_tar_stream(store, diff_id)
        with src, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
        sha = digest_.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        digest = "sha256:" + sha.hexdigest()
        size = tmp.stat().st_size
        store.adopt_blob(tmp, digest)
        store.add_layer_blob(diff_id, digest, oci.DOCKER_LAYER_GZIP)
        return digest, oci.DOCKER_LAYER_GZIP, size
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _ProgressReader:
    def __init__(self, f: BinaryIO, total: int, sid: str, progress: Progress) -> None:
        self.f, self.total, self.sid, self.progress = f, total, sid, progress
        self.done = self.reported = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.done += len(data)
        if self.done - self.reported >= _PROGRESS_STEP or (data and self.done == self.total):
            self.reported = self.done
            detail = {"current": self.done, "total": self.total}
            self.progress({"status": "Pushing", "progressDetail": detail, "id": self.sid})
        return data

    def seek(self, pos: int) -> None:
        self.f.seek(pos)
        self.done = self.reported = 0


def _upload(
    client: RegistryClient,
    ref: Reference,
    digest: str,
    path_or_bytes: Any,
    size: int,
    sid: str,
    progress: Progress,
) -> bool:
    """Upload one blob unless the registry has it; True if it was pushed."""
    head = client.request("HEAD", f"/v2/{ref.path}/blobs/{digest}", _scope(ref, push=True))
    head.read()
    if head.status == 200:
        progress({"status": "Layer already exists", "progressDetail": {}, "id": sid})
        return False
    start = client.request("POST", f"/v2/{ref.path}/blobs/uploads/", _scope(ref, push=True), body=b"")
    _check_push(start, (202,), ref)
    location = start.headers.get("Location", "")
    start.read()
    if not location:
        raise RegistryError(f"registry {client.host} gave no upload location for {ref.familiar}")
    if "://" not in location:
        location = client.base + location
    url = location + ("&" if "?" in location else "?") + f"digest={digest}"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if isinstance(path_or_bytes, bytes):
        resp = client.request("PUT", url, _scope(ref, push=True), headers, path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            resp = client.request(
                "PUT", url, _scope(ref, push=True), headers, _ProgressReader(f, size, sid, progress)
            )
    _check_push(resp, (201,), ref)
    resp.read()
    progress({"status": "Pushed", "progressDetail": {}, "id": sid})
    return True


def _check_push(resp: Response, ok: tuple[int, ...], ref: Reference) -> None:
    if resp.status in ok:
        return
    text = registry_error_text(resp.read())
    status = resp.status if resp.status in (401, 403, 404) else 500
    raise RegistryError(f"push of {ref.familiar} failed: {resp.status} {text}", status)


def push(store: ImageStore, ref: Reference, auth: dict[str, Any] | None, progress: Progress) -> str:
    if ref.digest or not ref.tag:
        raise RegistryError(f"push needs a tag, not a digest: {ref.familiar}", 400)
    try:
        image_id = store.resolve(str(ref))
    except ImageNotFound:
        raise ImageNotFound(f"An image does not exist locally with the tag: {ref.familiar_name}") from None
    client = client_for(store, ref, auth)
    progress({"status": f"The push refers to repository [{ref.name}]"})
    config_bytes = store.read_blob(image_id)
    diff_ids = store.record(image_id)["layers"]
    for diff_id in diff_ids:
        progress({"status": "Preparing", "progressDetail": {}, "id": short_id(diff_id)})
    layer_descs = []
    for diff_id in diff_ids:
        digest, media_type, size = _gzip_blob(store, diff_id)
        _upload(client, ref, digest, store.blob_path(digest), size, short_id(diff_id), progress)
        layer_descs.append({"mediaType": media_type, "size": size, "digest": digest})
    _upload(client, ref, image_id, config_bytes, len(config_bytes), short_id(image_id), progress)
    use_oci = any("zstd" in d["mediaType"] or ".oci." in d["mediaType"] for d in layer_descs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST if use_oci else oci.DOCKER_MANIFEST,
        "config": {
            "mediaType": oci.OCI_CONFIG if use_oci else oci.DOCKER_CONFIG,
            "size": len(config_bytes),
            "digest": image_id,
        },
        "layers": layer_descs,
    }
    body = json.dumps(manifest, indent=3).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    resp = client.request(
        "PUT",
        f"/v2/{ref.path}/manifests/{ref.tag}",
        _scope(ref, push=True),
        {"Content-Type": manifest["mediaType"]},
        body,
    )
    _check_push(resp, (201,), ref)
    answered = resp.headers.get("Docker-Content-Digest")
    resp.read()
    if answered and answered != digest:
        raise DigestMismatch(f"pushed manifest of {ref.familiar}", digest, answered)
    store.add_image(config_bytes, digests=[ref.with_digest(digest)])
    progress({"status": f"{ref.tag}: digest: {digest} size: {len(body)}"})
    progress({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": digest, "Size": len(body)}})
    return digest


# ---- login -----------------------------------------------------------------------------------------


def server_host(server: str) -> str:
    """`https://index.docker.io/v1/`, `docker.io`, `localhost:5000`, `http://h:1/` -> the API host[:port]."""
    host = server.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host in ("", "docker.io", "index.docker.io", "registry-1.docker.io"):
        return "registry-1.docker.io"
    return host


def login(store: ImageStore, auth: dict[str, Any]) -> dict[str, str]:
    """`POST /auth`: check the credentials against the registry's /v2/ (answering its challenge)."""
    from .reference import is_loopback_host

    host = server_host(str(auth.get("serveraddress") or ""))
    client = RegistryClient(
        host, insecure=is_loopback_host(host) or host in store.insecure_registries, auth=auth
    )
    resp = client.request("GET", "/v2/", "")
    body = resp.read()
    if resp.status in (401, 403):
        raise RegistryError(f"login to {host} failed: unauthorized: incorrect username or password", 401)
    if resp.status != 200:
        raise RegistryError(f"login to {host}: registry answered {resp.status}: {registry_error_text(body)}")
    return {"Status": "Login Succeeded", "IdentityToken": ""}
