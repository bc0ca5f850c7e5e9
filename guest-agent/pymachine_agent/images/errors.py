"""The image store's errors, under the names its callers use; the classes live in pymachine_agent/errors.py
(one family for the whole agent, HTTP status by type)."""

from __future__ import annotations

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

__all__ = [
    "ArchiveError",
    "DigestMismatch",
    "ImageConflict",
    "ImageError",
    "ImageNotFound",
    "InvalidReference",
    "RegistryError",
    "UnsafeLayerError",
]
