"""Paths inside a root directory (an image's or a container's rootfs, a build context), resolved as if that
root were `/`: a symlink in it, absolute or full of `..`, never leads outside.

Two forms, one rule:
- `resolve` gives a path string (for mount targets and the builder's COPY, where the tree is not running
  anything that could swap a directory meanwhile);
- `open_in_root` / `read_regular` walk the tree one component at a time, each opened relative to its parent's
  fd with O_NOFOLLOW, so a swap during the walk cannot lead out either. `read_regular` is how the engine reads
  a file an image controls (its /etc/passwd and /etc/group): bounded in size, regular files only, opened
  O_NONBLOCK so that a FIFO cannot hang the reader.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_LINKS = 40  # Linux's own limit on symlinks in one path resolution


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve(root: str, path: str, follow_last: bool = True, max_links: int = MAX_LINKS) -> str:
    """`path` inside `root` with every symlink resolved in the root; `..` stops at the root. Raises OSError
    (ELOOP) past `max_links` links."""
    parts = _parts(path)
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate) and (parts or follow_last):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = _parts(target) + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def open_in_root(
    root: str, path: str, flags: int = os.O_RDONLY, max_links: int = MAX_LINKS, regular: bool = False
) -> int:
    """An fd for `path` inside `root` opened with `flags` (plus O_NOFOLLOW|O_CLOEXEC), found by an fd-relative
    walk: each directory is opened from its parent's fd with O_NOFOLLOW, each symlink is read and resolved
    again from the root's fd. With `regular`, anything but a regular file is refused before it is opened (no
    device's open side effects). Raises OSError (ENOENT, ENOTDIR, ELOOP, EINVAL, ...) like open(2)."""
    dirs = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]  # dirs[0] is the root
    parts = _parts(path)
    links = 0
    try:
        while parts:
            part = parts.pop(0)
            if part == "..":
                if len(dirs) > 1:
                    os.close(dirs.pop())
                continue
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirs[-1])
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    links += 1
                    if links > max_links:
                        raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
                    target = os.readlink(part, dir_fd=dirs[-1])
                    if target.startswith("/"):
                        while len(dirs) > 1:
                            os.close(dirs.pop())
                    parts = _parts(target) + parts
                    continue
                if not parts:  # the last component: open it for real, still refusing a link swapped in
                    if regular and not stat.S_ISREG(mode):
                        raise OSError(errno.EINVAL, f"{path} is not a regular file")
                    return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirs[-1])
                if not stat.S_ISDIR(mode):
                    raise OSError(errno.ENOTDIR, f"{part} in {path} is not a directory")
                dirs.append(fd)
                fd = -1
            finally:
                if fd >= 0:
                    os.close(fd)
        # only `..` components after the last name (`etc/..`): the directory reached
        if regular:
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=dirs[-1])
    finally:
        for d in dirs:
            os.close(d)


def read_regular(root: str, path: str, limit: int) -> bytes:
    """The content of the regular file `path` inside `root`, at most `limit` bytes. Raises OSError: what
    open(2) says, or EINVAL for a FIFO, device, socket or directory, or EFBIG past `limit`."""
    fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, regular=True)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
