"""`docker cp`: read and write paths of a container's filesystem as tar streams.

Every file operation runs in a short-lived child process that first chroots into the container's root
(`/proc/<pid>/root` of a running container, or a private overlay mount of a stopped one), so symlinks
inside the container — absolute ones included — resolve against the container, never the guest.

    python3 -m pymachine_agent.archive stat ROOT PATH   → JSON stat line (or exit 2: not found)
    python3 -m pymachine_agent.archive get  ROOT PATH   → tar on stdout
    python3 -m pymachine_agent.archive put  ROOT PATH   ← tar on stdin
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_HAS_FILTERS = hasattr(tarfile, "fully_trusted_filter")
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27


class ArchiveNotFound(Exception):
    status = 404

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArchiveFailed(Exception):
    status = 500

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def go_mode(st_mode: int) -> int:
    """A Go os.FileMode (what X-Docker-Container-Path-Stat carries) from a POSIX st_mode."""
    mode = stat.S_IMODE(st_mode)
    if stat.S_ISDIR(st_mode):
        mode |= _GO_DIR
    elif stat.S_ISLNK(st_mode):
        mode |= _GO_SYMLINK
    return mode


def stat_header(info: dict) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


# -- in the chrooted child ---------------------------------------------------------------------------


def _child_stat(path: str) -> dict:
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    import time

    mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime)) + "Z"
    name = os.path.basename(path.rstrip("/")) or "/"
    return {"name": name, "size": st.st_size, "mode": go_mode(st.st_mode), "mtime": mtime, "linkTarget": link}


def _child(argv: list[str]) -> int:
    op, root, path = argv
    os.chroot(root)
    os.chdir("/")
    if op == "stat":
        try:
            info = _child_stat(path)
        except FileNotFoundError:
            return 2
        sys.stdout.write(json.dumps(info))
        return 0
    if op == "get":
        follow = path.endswith("/.") or path.endswith("/")
        target = os.path.realpath(path) if follow else path
        if not os.path.lexists(target):
            return 2
        base = os.path.basename(path.rstrip("/").rstrip(".").rstrip("/")) or "/"
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
            tar.add(target, arcname=base if base != "/" else ".", recursive=True)
        return 0
    if op == "put":
        if not os.path.isdir(path):
            return 2
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
            for member in tar:
                name = os.path.normpath(member.name)
                if name.startswith("..") or os.path.isabs(name):
                    continue
                if _HAS_FILTERS:  # 3.11.4+: say so explicitly (the default changes in 3.14)
                    tar.extract(member, path=path, set_attrs=True, numeric_owner=True, filter="fully_trusted")
                else:  # Debian 12's 3.11.2 has no extraction filters: the old behaviour is fully trusted
                    tar.extract(member, path=path, set_attrs=True, numeric_owner=True)
        return 0
    return 64


# -- in the agent --------------------------------------------------------------------------------------


def _run(op: str, root: str, path: str, stdin: bytes | Iterable[bytes] | None = None) -> bytes:
    cmd = [sys.executable, "-m", "pymachine_agent.archive", op, root, path]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    if isinstance(stdin, (bytes, type(None))):
        proc = subprocess.run(cmd, input=stdin or b"", capture_output=True, env=env)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    else:
        with tempfile.TemporaryFile() as spool:
            for piece in stdin:
                spool.write(piece)
            spool.seek(0)
            proc = subprocess.run(cmd, stdin=spool, capture_output=True, env=env)
            out, err, code = proc.stdout, proc.stderr, proc.returncode
    if code == 2:
        raise ArchiveNotFound(f"Could not find the file {path} in container")
    if code != 0:
        raise ArchiveFailed(f"archive {op} {path} failed: {err.decode(errors='replace').strip()[-400:]}")
    return out


def path_stat(root: str, path: str) -> dict:
    return json.loads(_run("stat", root, path))


def get_tar(root: str, path: str) -> Iterator[bytes]:
    data = _run("get", root, path)
    for i in range(0, len(data), 1 << 20):
        yield data[i : i + (1 << 20)]


def put_tar(root: str, path: str, chunks: Iterable[bytes]) -> None:
    _run("put", root, path, chunks)


@contextlib.contextmanager
def stopped_root(upper: str, layers: list[str], writable: bool) -> Iterator[str]:
    """Mount a stopped container's filesystem privately (read-only unless `writable`)."""
    target = tempfile.mkdtemp(prefix="pm-cp-")
    lower = ":".join(reversed(layers))
    if writable:
        work = str(Path(upper).parent / "work")
        Path(work).mkdir(exist_ok=True)
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    else:
        opts = f"lowerdir={upper}:{lower}" if layers else f"lowerdir={upper}:{upper}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, target], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", target], capture_output=True)
        os.rmdir(target)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
