"""The container files service: `docker cp` both ways, `docker export` and `docker diff`, all on an fd of
the container's root (archive.py resolves every path inside it)."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import archive, cpmounts, inroot
from ..dockerspec import BadParameter
from ..runtime import detached
from .records import ContainerRecords


class ContainerFiles:
    def __init__(self, records: ContainerRecords) -> None:
        self.records = records

    def changes(self, ref: str) -> list[dict[str, Any]]:
        st = self.records.state(ref)
        upper = Path(st.upper_dir)
        layers = [Path(p) for p in (st.spec.layers if st.spec else [])]
        out = []
        for dirpath, dirnames, filenames in os.walk(upper):
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = "/" + str(full.relative_to(upper))
                try:
                    s = full.lstat()
                except OSError:
                    continue
                if (
                    not full.is_dir()
                    and os.major(s.st_rdev) == 0
                    and os.minor(s.st_rdev) == 0
                    and (s.st_mode & 0o170000 == 0o020000)
                ):
                    kind = 2  # a whiteout: deleted
                else:
                    kind = 0 if any(_lexists_in(lay, rel) for lay in layers) else 1
                out.append({"Path": rel, "Kind": kind})
        # what the runtime creates only to mount over (Docker keeps these in its hidden "-init" layer)
        hidden = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/sys", "/dev/console"}
        out = [
            c
            for c in out
            if c["Path"] not in hidden and not c["Path"].startswith(("/dev/", "/proc/", "/sys/"))
        ]
        paths = [c["Path"] for c in out]
        return [
            c
            for c in out
            if not (c["Kind"] == 0 and _isdir_in(upper, c["Path"]))
            or any(p.startswith(c["Path"] + "/") for p in paths)
        ]

    # -- docker cp / export: archive.py, on an fd of the container's root ----------------------------------

    def _root_of(
        self, st: Any, writable: bool, mounts: bool = True
    ) -> contextlib.AbstractContextManager[int]:
        """An fd of the container's root: a running one's own (its volumes included, as Docker's cp sees
        them), else a detached overlay of its layers that no path of the guest shows (runtime/detached.py)."""
        if mounts and st.running and st.pid:
            return _closing(os.open(f"/proc/{st.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        return detached.overlay(st.spec.layers if st.spec else [], st.upper_dir, writable)

    def _cp_root(
        self, st: Any, path: str, writable: bool
    ) -> tuple[contextlib.AbstractContextManager[int], str]:
        """`docker cp`'s root and path. A stopped container's volumes and binds are not in its detached
        overlay, so a path below one (`/vol1/data.txt`) is served from the mount's source, as dockerd
        mounts them for the copy; a running container's own root has them."""
        found = None if st.running and st.pid else cpmounts.covering(st.spec.mounts if st.spec else [], path)
        if found is None:
            return self._root_of(st, writable), path
        mount, rest = found
        if writable and mount.readonly:
            raise BadParameter(f"mounted volume is marked read-only: {mount.target}")
        return _closing(cpmounts.open_source(mount)), rest

    def _cp_name(self, path: str, routed: str, name: str) -> str:
        """The tar's top name: a mount's own folder (`cp ctr:/vol1 .`) is named as in the container."""
        if routed.rstrip("/") == "" and not path.endswith(("/", "/.")):
            return posixpath.basename(path.rstrip("/")) or name
        return name

    def archive_get(self, ref: str, path: str, head: bool = False) -> tuple[str, Iterator[bytes]]:
        st = self.records.state(ref)
        with contextlib.ExitStack() as stack:
            root_cm, routed = self._cp_root(st, path, writable=False)
            root = stack.enter_context(root_cm)
            info = archive.path_stat(root, routed)
            info["name"] = self._cp_name(path, routed, info["name"])
            if head:
                return archive.stat_header(info), (piece for piece in ())
            top, name = archive.open_source(root, routed)
            name = self._cp_name(path, routed, name)
            stack.callback(os.close, top)
            # the root stays open while the tar streams; the stream's end (or close) releases it
            return archive.stat_header(info), _Streaming(stack.pop_all(), archive.tar_stream(top, name))
        raise AssertionError("unreachable")

    def export(self, ref: str) -> Iterator[bytes]:
        """`docker export`: the container's filesystem without its mounts (image layers + upper dir)."""
        st = self.records.state(ref)
        with contextlib.ExitStack() as stack:
            root = stack.enter_context(self._root_of(st, writable=False, mounts=False))
            return _Streaming(stack.pop_all(), archive.tar_stream(root, "", include_top=False))
        raise AssertionError("unreachable")

    def archive_put(self, ref: str, path: str, chunks: Any, no_overwrite: bool = False) -> None:
        st = self.records.state(ref)
        root_cm, path = self._cp_root(st, path, writable=True)
        with root_cm as root:
            try:
                archive.put_tar(root, path, chunks, no_overwrite=no_overwrite)
            except OSError as err:
                raise archive.ArchiveFailed(f"copying into {path}: {err}") from err


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


class _Streaming:
    """`chunks`, then `stack` closed: when the stream ends or fails, or the API closes it because the
    client left (also before the first piece, when a generator's own `finally` would never run)."""

    def __init__(self, stack: contextlib.ExitStack, chunks: Iterator[bytes]) -> None:
        self.stack, self.chunks = stack, chunks

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            getattr(self.chunks, "close", lambda: None)()
        finally:
            self.stack.close()


def _lexists_in(root: Path, path: str) -> bool:
    """Whether `path` is in the tree `root`, its symlinks resolved inside that tree (inroot.py): an image
    layer's symlink must not make `docker diff` look at the guest's own files."""
    try:
        return os.path.lexists(inroot.resolve(str(root), path, follow_last=False))
    except OSError:
        return False


def _isdir_in(root: Path, path: str) -> bool:
    try:
        return os.path.isdir(inroot.resolve(str(root), path))
    except OSError:
        return False
