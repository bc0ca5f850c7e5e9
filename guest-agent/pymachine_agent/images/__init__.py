"""The guest engine's image store: content-addressed blobs, shared unpacked layers, tags, registry pull/push,
docker-archive/OCI-layout load and save, commit of a container's overlay upper dir.

Public API (what the runtime, the builder and the Docker API glue call)::

    store = ImageStore(Path("/var/lib/pymachine/images"))

    # lookups: `ref` is a name[:tag][@digest], a full image ID (sha256:<hex> or <hex>) or a unique ID prefix
    store.resolve(ref) -> "sha256:<id>"        # ImageNotFound (404) "No such image: busybox:latest"
    store.exists(ref) -> bool
    store.inspect(ref) -> dict                 # GET /images/{ref}/json shape
    store.history(ref) -> list[dict]           # GET /images/{ref}/history shape
    store.list(filters=None, all_images=False) -> list[dict]   # GET /images/json shape (filters: dangling,
                                               # reference, label); untagged parents only with all_images
    store.config(ref) -> dict                  # the full OCI/Docker image config JSON
    store.layer_dirs(ref, short=False) -> list[Path]
        # the folders to stack, LOWEST first (overlay lowerdir = reversed, ':'-joined); a repeated layer
        # appears once, at its top place; short=True gives <root>/l/<20 hex> links (shorter mount options)

    # changes; `progress` gets Docker's JSON-stream message dicts ({"status", "id", "progressDetail"})
    store.pull(ref, auth=None, progress=None) -> "sha256:<id>"
    store.push(ref, auth=None, progress=None) -> "sha256:<manifest digest>"
    store.login(auth) -> {"Status": "Login Succeeded", "IdentityToken": ""}   # POST /auth; 401 if wrong
    store.load(fileobj, progress=None) -> ["busybox:latest" | "sha256:<id>", ...]   # docker-archive / OCI
    store.save(refs, fileobj) -> None          # docker-archive (+ OCI layout) tar to a writable stream
    store.tag(src, dst) -> None                # dst: "repo[:tag]" or a Reference
    store.remove(ref, force=False, in_use=None) -> [{"Untagged": "x:y"}, {"Deleted": "sha256:…"}]
    store.prune(dangling_only=True, in_use=None) -> {"ImagesDeleted": [...] | None, "SpaceReclaimed": n}
                                               # never an image another kept image has as parent
    store.commit(upper_dir, parent, changes=None, *, comment="", author="", created_by="", tag=None)
        -> "sha256:<id>"                       # upper_dir=None: a config-only image (builder's ENV…)
    store.tmp_dir() -> Path                    # new private scratch folder on the store's filesystem (the
                                               # caller removes it; cleared at open, empty ones after 1 h)
    store.spool_dir() -> Path                  # one stable folder for tempfile.TemporaryFile(dir=...)

`changes` of commit: config keys to override (Cmd, Env, …); two lowercase keys are special: "config" (a
container's whole Config, merged first) and "changes" (`docker commit --change` lines such as 'CMD ["x"]').

`auth` is Docker's AuthConfig dict (decoded X-Registry-Auth): {"username", "password", "identitytoken",
"registrytoken", "serveraddress"}. `in_use(image_id) -> list[str]` returns the IDs/names of containers using
that image. Every error is an ImageError subclass whose `.status` is the HTTP status to answer with.
"""

from ..errors import (
    ArchiveError,
    DigestMismatch,
    ImageConflict,
    ImageError,
    ImageNotFound,
    InvalidReference,
    RegistryError,
    UnsafeLayerError,
)
from .reference import Reference, parse, parse_repo_tag
from .store import ImageStore, InUse, Progress

__all__ = [
    "ArchiveError",
    "DigestMismatch",
    "ImageConflict",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "InUse",
    "InvalidReference",
    "Progress",
    "Reference",
    "RegistryError",
    "UnsafeLayerError",
    "parse",
    "parse_repo_tag",
]
