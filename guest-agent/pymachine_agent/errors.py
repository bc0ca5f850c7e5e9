"""The guest agent's one error family: what went wrong, in words `docker` prints, and the HTTP status the
Docker API answers with. The API turns any `AgentError` into `{"message": ...}` with its status in one place
(api/server.py); anything else is a bug, answered 500 with a traceback in the log.

The status comes from the type: a part's error derives from its part's family (`ImageError`, `VolumeError`,
...), which callers catch, and from one of the status classes below (`NotFound` 404, `Conflict` 409, ...),
which the API answers by. The few whose status depends on the case (a registry's refusal, a share that is
missing or refused, an HTTP framing error) pass it in. Every class lives here; the parts re-export theirs
under the names their callers use (`pymachine_agent.images.ImageNotFound`, `network.model.ConflictError`)."""

from __future__ import annotations

import errno


class AgentError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


# -- by status ----------------------------------------------------------------------------------------


class NotModified(AgentError):
    """Start of a running / stop of a stopped container: 304 with no body, as dockerd answers."""

    status = 304

    def __init__(self, message: str = "not modified") -> None:
        super().__init__(message)


class BadRequest(AgentError):
    status = 400


class Forbidden(AgentError):
    status = 403


class NotFound(AgentError):
    status = 404


class Conflict(AgentError):
    status = 409


class Unavailable(AgentError):
    """The engine is up but cannot serve this, yet or at all (its kernel modules did not load, kernelgate)."""

    status = 503


# -- containers: the runtime and the engine's create/translate ------------------------------------------


class RuntimeErr(AgentError):
    """A runtime failure with a message fit for `docker` to print."""


class ContainerNotFound(RuntimeErr, NotFound):
    """No such container (or exec instance, or link)."""


class ContainerConflict(RuntimeErr, Conflict):
    """The container is in the wrong state for the request (e.g. removing a running container)."""


class StartError(RuntimeErr):
    """The container could not start; `exit_code` is what Docker reports (127 not found, 126 not runnable)."""

    def __init__(self, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BadParameter(BadRequest):
    """A create/update request Docker refuses with 400 (dockerspec.py, the engine)."""


# -- images ---------------------------------------------------------------------------------------------


class ImageError(AgentError):
    """Base of the image store's errors."""


class InvalidReference(ImageError, BadRequest):
    """A reference that is not `name[:tag][@digest]`."""


class ImageNotFound(ImageError, NotFound):
    """No image for that reference or ID: Docker's `No such image: x`."""


class ImageConflict(ImageError, Conflict):
    """The image is in use by a container or referenced by several tags."""


class UnsafeLayerError(ImageError, BadRequest):
    """A layer tar entry would escape the layer folder or is a refused device node; names the entry."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"refusing layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class DigestMismatch(ImageError):
    """Content whose sha256 is not the digest it was announced with (a corrupted or tampered blob): 500."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ArchiveError(ImageError, BadRequest):
    """A docker-archive / OCI-layout tarball that cannot be read (missing member, bad JSON)."""


class RegistryError(ImageError):
    """A registry refused or failed a request; `status` is what the Docker API should answer."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message, status)


class BadChange(ImageError, BadRequest):
    """A `commit --change` / `import --change` instruction that cannot be applied."""


# -- networks ---------------------------------------------------------------------------------------------


class NetworkError(AgentError):
    """A networking failure a Docker client should see."""


class NetworkNotFound(NetworkError, NotFound):
    """No such network / endpoint."""


class NetworkConflict(NetworkError, Conflict):
    """Name taken, network still in use, container already connected."""


class NetworkForbidden(NetworkError, Forbidden):
    """A builtin network cannot be removed or (dis)connected this way."""


class InvalidNetworkParameter(NetworkError, BadRequest):
    """A malformed request: bad subnet, bad port spec, unknown driver."""


class PortClashError(NetworkError):
    """A host port is already published by another container or bound by a process in the guest (500)."""

    def __init__(self, message: str, proto: str, host_port: int) -> None:
        super().__init__(message)
        self.proto = proto
        self.host_port = host_port


# -- volumes, shares, archives (docker cp) --------------------------------------------------------------


class VolumeError(AgentError):
    """Base of the volume store's errors."""


class VolumeNotFound(VolumeError, NotFound):
    pass


class VolumeInUse(VolumeError, Conflict):
    pass


class VolumeBadName(VolumeError, BadRequest):
    pass


class ShareError(AgentError):
    """A bind the shares do not allow (400) or a share that is not there (503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


class ArchiveNotFound(NotFound):
    """`docker cp` of a path the container does not have."""


class ArchiveFailed(AgentError):
    """`docker cp` into a container failed on the way (500 with the reason)."""


# -- messages ---------------------------------------------------------------------------------------------


def no_space_message(exc: OSError) -> str:
    """What a write that met a full disk tells the client (Docker says "no space left on device" too)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return (
        f"no space left on device{where}: the VM's disk is full; free space with docker rm, "
        "docker image prune or docker system prune, or give the machine a larger disk"
    )


def client_message(exc: BaseException) -> str:
    """The message a client sees for `exc` in a stream that already started (pull, load, push)."""
    if isinstance(exc, AgentError):
        return exc.message or str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return no_space_message(exc)
    return str(exc)
