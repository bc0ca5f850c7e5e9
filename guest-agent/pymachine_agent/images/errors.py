"""Errors of the image store. Each carries the HTTP status the Docker API answers with, so the API glue can
turn any of them into `{"message": str(err)}` with `err.status` without a mapping table of its own."""

from __future__ import annotations

from ..errors import AgentError


class ImageError(AgentError):
    """Base class: `status` is the Docker API status code for this failure."""


class InvalidReference(ImageError):
    """A reference that is not `name[:tag][@digest]` (Docker answers 400)."""

    status = 400


class ImageNotFound(ImageError):
    """No image for that reference or ID: Docker's `No such image: x`."""

    status = 404


class ImageConflict(ImageError):
    """The image is in use by a container or referenced by several tags (409)."""

    status = 409


class UnsafeLayerError(ImageError):
    """A layer tar entry would escape the layer folder or is a refused device node; names the entry."""

    status = 400

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"refusing layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class DigestMismatch(ImageError):
    """Content whose sha256 is not the digest it was announced with (a corrupted or tampered blob)."""

    status = 500

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ArchiveError(ImageError):
    """A docker-archive / OCI-layout tarball that cannot be read (missing member, bad JSON)."""

    status = 400


class RegistryError(ImageError):
    """A registry refused or failed a request; `status` is what the Docker API should answer."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message, status)
