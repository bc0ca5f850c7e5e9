"""The engine's one in-root resolver: paths inside a root directory (an image's or a container's rootfs, a
build context), resolved as if that root were `/`: a symlink in it, absolute or full of `..`, never leads
outside.

Two forms, one rule:
- `resolve` gives a path string (for mount targets and the builder's COPY, where the tree is not running
  anything that could swap a directory meanwhile);
- `open_in_root` opens below an fd of the root, for trees a running container may be changing (`docker cp`
  both ways, `docker export`) and for files an image controls: the kernel's openat2(RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS) where there is one (Linux ≥ 5.6), else `walk`, one component at a time with O_PATH |
  O_NOFOLLOW, each symlink read here and resolved again from the root's fd. Either way `..` stops at the root,
  an absolute symlink means the root, and a directory swapped for a symlink mid-operation resolves inside the
  root too: the path is never re-read from the guest's `/`. Nothing is chrooted, so nothing of the tree (NSS
  modules, gconv, locales) is ever loaded into the engine.
- `read_regular` is how the engine reads a file an image controls (its /etc/passwd and /etc/group): bounded
  in size, regular files only, so that a FIFO cannot hang the reader and no device is opened.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

MAX_LINKS = 40  # Linux's own limit on symlinks in one path resolution
_SYS_OPENAT2 = 437  # the same number on every architecture (new syscalls share one table since 5.1)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_syscall = ctypes.CDLL(None, use_errno=True).syscall


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


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None  # None: not tried yet


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, *, follow_last: bool = True) -> int:
    """A new fd for `path` below the directory `root_fd`, resolved with `root_fd` as `/`.

    `flags` are os.open flags (no O_CREAT: create with the *at calls on the parent's fd);
    `follow_last=False` opens a final symlink itself (O_PATH) or fails with ELOOP (anything else), like
    O_NOFOLLOW. Open for reading only after an O_PATH fstat said what it is: a FIFO would block and a device
    node has side effects."""
    global _openat2_works
    if flags & os.O_CREAT:
        raise ValueError("open_in_root does not create: use the parent's fd")
    rel = path.lstrip("/") or "."
    if not follow_last:
        flags |= os.O_NOFOLLOW
    for _ in range(3):
        if _openat2_works is False:
            break
        try:
            fd = _openat2(root_fd, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            _openat2_works = True
            return fd
        except OSError as err:
            if err.errno == errno.EAGAIN:
                continue  # a rename raced a `..` (a container swapping its dirs): the kernel asks to retry
            # ENOSYS: kernel < 5.6; EPERM: a seccomp filter of ours (or the host's) without openat2
            if _openat2_works or err.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            _openat2_works = False
    return walk(root_fd, rel, flags, follow_last)


def walk(root_fd: int, path: str, flags: int = os.O_PATH, follow_last: bool = True) -> int:
    """open_in_root without openat2: one component at a time (public for the tests of both ways)."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    stack = [os.dup(root_fd)]  # fds of the directories walked so far; stack[0] is the root
    links = 0
    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            last = not todo
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and (not last or follow_last):
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        # the final open, from the fd of what was resolved (an O_PATH fd reopens through /proc/self/fd)
        end = stack[-1]
        if flags & os.O_PATH and not flags & os.O_DIRECTORY:
            return os.dup(end)
        st = os.fstat(end)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        if flags & os.O_PATH:
            return os.dup(end)
        return reopen(end, flags & ~os.O_NOFOLLOW)
    finally:
        for fd in stack:
            os.close(fd)


def reopen(path_fd: int, flags: int) -> int:
    """A real fd (for reading, fchown, futimens) of the very inode an O_PATH fd holds."""
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC)


def make_dirs(root_fd: int, path: str, mode: int = 0o755) -> int:
    """An O_PATH fd of the directory `path` below the root, creating missing components (mkdir -p inside)."""
    try:
        return open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    pfd = make_dirs(root_fd, parent, mode)
    try:
        try:
            os.mkdir(name, mode, dir_fd=pfd)
        except FileExistsError:
            pass  # made meanwhile, or a dangling symlink: the open below says which
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        fd = -1
    finally:
        os.close(pfd)
    return fd if fd >= 0 else open_in_root(root_fd, path, os.O_PATH | os.O_DIRECTORY)


def read_regular(root: str, path: str, limit: int) -> bytes:
    """The content of the regular file `path` inside `root`, at most `limit` bytes. Raises OSError: what
    open(2) says, or EINVAL for a FIFO, device, socket or directory, or EFBIG past `limit`."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = open_in_root(root_fd, path)
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(found).st_mode):  # decided on the O_PATH fd: nothing opened yet
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        fd = reopen(found, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    finally:
        os.close(found)
    try:
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
