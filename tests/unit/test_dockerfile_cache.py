"""Build cache keys and the persistent index."""

from __future__ import annotations

import os
from pathlib import Path

from pymachine_agent.build.cache import BuildCache, hash_paths, step_key


def test_key_depends_on_parent_instruction_and_extra() -> None:
    base = step_key("sha256:p", "RUN echo hi", {"env": ["A=1"]})
    assert base == step_key("sha256:p", "RUN echo hi", {"env": ["A=1"]})
    assert base != step_key("sha256:q", "RUN echo hi", {"env": ["A=1"]})
    assert base != step_key("sha256:p", "RUN echo ho", {"env": ["A=1"]})
    assert base != step_key("sha256:p", "RUN echo hi", {"env": ["A=2"]})


def test_content_hash_tracks_bytes_modes_names_links(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("one")
    (d / "b").write_text("two")
    first = hash_paths(tmp_path, [d])
    os.utime(d / "a", (1, 1))
    assert hash_paths(tmp_path, [d]) == first  # mtimes do not matter
    (d / "a").write_text("ONE")
    changed = hash_paths(tmp_path, [d])
    assert changed != first
    os.chmod(d / "a", 0o755)
    assert hash_paths(tmp_path, [d]) != changed
    os.chmod(d / "a", 0o644)
    assert hash_paths(tmp_path, [d]) == changed
    os.symlink("a", d / "l")
    with_link = hash_paths(tmp_path, [d])
    assert with_link != changed
    os.unlink(d / "l")
    os.symlink("b", d / "l")
    assert hash_paths(tmp_path, [d]) != with_link
    # the same bytes under another name are a different source
    assert hash_paths(tmp_path, [d / "a"]) != hash_paths(tmp_path, [d / "b"])


def test_index_persists_and_forgets(tmp_path: Path) -> None:
    path = tmp_path / "state" / "build-cache.json"
    cache = BuildCache(path)
    assert cache.get("k") is None
    cache.put("k", "sha256:i")
    cache.put("k2", "sha256:i")
    assert BuildCache(path).get("k") == "sha256:i"
    cache.forget_image("sha256:i")
    assert BuildCache(path).get("k2") is None
    path.write_text("{corrupt")
    assert BuildCache(path).get("k") is None  # a damaged index is an empty one, not a crash


def test_two_writers_merge_instead_of_overwriting(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    a, b = BuildCache(path), BuildCache(path)  # two builds that loaded the index at the same time
    a.put("from-a", "sha256:a")
    b.put("from-b", "sha256:b")
    fresh = BuildCache(path)
    assert fresh.get("from-a") == "sha256:a" and fresh.get("from-b") == "sha256:b"


def test_repeated_layers_keep_their_topmost_place() -> None:
    from pymachine_agent.build.rootfs import unique_layers

    a, b, c = Path("/a"), Path("/b"), Path("/c")
    assert unique_layers([a, b, a, c, b]) == [a, c, b]
    assert unique_layers([a, b, c]) == [a, b, c]


def test_digests_from_unpacking_give_the_same_key_as_reading(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"content")
    known = {"d/f": hashlib.sha256(b"content").hexdigest()}
    assert hash_paths(tmp_path, [tmp_path / "d"], known) == hash_paths(tmp_path, [tmp_path / "d"])
    # and the known digest is what is used (no second read)
    assert hash_paths(tmp_path, [tmp_path / "d"], {"d/f": "0" * 64}) != hash_paths(tmp_path, [tmp_path / "d"])
