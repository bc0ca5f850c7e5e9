"""The build context: unpack the tar the client sent, apply `.dockerignore`, resolve COPY/ADD sources.

`.dockerignore` follows moby/patternmatcher: Go `filepath.Match` syntax (`*` and `?` stop at `/`, `[...]`
classes, `\\` escapes), `**` for any number of directories, `!` re-includes, the last matching line
wins, and a pattern that matches a parent directory matches everything below it. Matching is `globmatch`'s,
linear in the path (no regex: a hostile pattern cannot make it backtrack).
Source paths never leave the context: `COPY ../x` and symlinks pointing outside
are resolved inside the context root or refused.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pymachine_agent import inroot

from .globmatch import Glob, GlobError


class ContextError(ValueError):
    """The context or a source path in it is unusable; the message is shown to the user as is."""


# ---------------------------------------------------------------------------------------------- patterns


def go_clean(path: str) -> str:
    """Go's path.Clean (posixpath.normpath keeps a leading '//', Go does not)."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _compile(pattern: str, double_star: bool) -> Glob:
    try:
        return Glob(pattern, double_star)
    except GlobError as exc:
        raise ContextError(str(exc)) from None


def go_match(pattern: str, name: str) -> bool:
    """filepath.Match: does the whole `name` match the glob `pattern`?"""
    return _compile(pattern, double_star=False).match(name)


def has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


@dataclass(frozen=True)
class IgnorePattern:
    text: str
    exclusion: bool
    glob: Glob


class DockerIgnore:
    """The patterns of a `.dockerignore` file."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[IgnorePattern] = []
        for i, raw in enumerate(lines):
            line = raw.removeprefix("\ufeff") if i == 0 else raw
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            if line:
                line = go_clean(line)
                if len(line) > 1 and line.startswith("/"):
                    line = line[1:]
            self.patterns.append(IgnorePattern(line, exclusion, _compile(line, double_star=True)))

    @classmethod
    def from_text(cls, text: str) -> DockerIgnore:
        return cls(text.splitlines())

    def ignored(self, relpath: str) -> bool:
        """Is `relpath` (slash-separated, relative to the context root) excluded?"""
        path = go_clean(relpath)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a pattern that could flip the current answer needs evaluating
            if pattern.glob.match_or_parent(path):
                matched = not pattern.exclusion
        return matched


# ---------------------------------------------------------------------------------------------- context


def unpack(fileobj: BinaryIO, dest: Path) -> dict[str, str]:
    """Extract a (possibly compressed) tar stream into `dest`; members may not leave it."""
    from . import tarsafe

    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            return tarsafe.extract(tar, dest, owners=False)
    except ContextError as exc:
        raise ContextError(f"the build context is unusable: {exc}") from None
    except tarfile.TarError as exc:
        raise ContextError(f"the build context is not a valid tar archive: {exc}") from None


def apply_dockerignore(root: Path, ignore: DockerIgnore) -> int:
    """Delete what `.dockerignore` excludes (the client usually did already); returns the count."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if ignore.ignored(rel):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
        if rel_dir != "." and ignore.ignored(rel_dir) and not os.listdir(dirpath):
            os.rmdir(dirpath)
            removed += 1
    return removed


def read_dockerfile(root: Path, name: str) -> str:
    """The Dockerfile named by the `dockerfile` build parameter, confined to the context."""
    name = name or "Dockerfile"
    try:
        path = resolve_in_root(root, name)
    except ContextError:
        raise ContextError(
            f"Cannot locate specified Dockerfile: {name} (it is outside the build context)"
        ) from None
    if not path.is_file() and name == "Dockerfile":
        path = root / "dockerfile"  # Docker accepts the lower-case name too
    if not path.is_file():
        raise ContextError(f"Cannot locate specified Dockerfile: {name}")
    return path.read_text(encoding="utf-8", errors="replace")


def prepare(fileobj: BinaryIO, dest: Path, dockerfile: str, digests: dict[str, str] | None = None) -> str:
    """Unpack, read the Dockerfile, then drop what `.dockerignore` excludes; returns the Dockerfile."""
    written = unpack(fileobj, dest)
    if digests is not None:
        digests.update(written)  # the sha256 of each file, for the cache keys of COPY/ADD
    text = read_dockerfile(dest, dockerfile)
    ignore_file = dest / ".dockerignore"
    if ignore_file.is_file():
        apply_dockerignore(dest, DockerIgnore.from_text(ignore_file.read_text(errors="replace")))
    return text


# ---------------------------------------------------------------------------------------------- paths


def resolve_in_root(root: Path, path: str, follow_last: bool = True) -> Path:
    """`path` inside `root`, with symlinks resolved as if `root` were `/` (moby's FollowSymlinkInScope).

    A relative path that climbs out (`../x`) is refused; symlinks that point out are clamped to `root`.
    """
    if not path.startswith("/") and go_clean(path).split("/")[0] == "..":
        raise ContextError(f"forbidden path outside the build context: {path}")
    try:
        return Path(inroot.resolve(str(root), path, follow_last, max_links=255))
    except OSError as exc:
        raise ContextError(exc.strerror or str(exc)) from None


def expand_sources(root: Path, source: str) -> list[Path]:
    """One COPY/ADD source (maybe a glob) → existing paths inside the context."""
    rel = go_clean(source.lstrip("/") or ".")
    if rel == ".." or rel.startswith("../"):
        raise ContextError(f"forbidden path outside the build context: {source}")
    if not has_glob(rel):
        path = resolve_in_root(root, rel)
        if not os.path.lexists(path):
            raise ContextError(
                f"file not found in build context or excluded by .dockerignore: stat {source}: "
                "no such file or directory"
            )
        return [path]
    glob = _compile(rel, double_star=False)
    matches: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep: list[str] = []
        for name in sorted(dirnames):
            entry = name if rel_dir == "." else f"{rel_dir}/{name}"
            if glob.match(entry):
                matches.append(Path(dirpath, name))  # a matching directory is copied whole
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            entry = name if rel_dir == "." else f"{rel_dir}/{name}"
            if glob.match(entry):
                matches.append(Path(dirpath, name))
    if not matches:
        raise ContextError(f"no source files were specified: nothing in the build context matches {source}")
    return sorted(matches)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
