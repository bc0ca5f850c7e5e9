"""Issue 13, the guest's revalidation walk (pymachine_agent/revalidate.py) on this host's kernel, as root: its
O_CREAT|O_EXCL opens go through a private read-only bind, so they never create anything whatever the names
are, never follow a link, and the bind is gone afterwards. What those opens do to FUSE's caches is proven on
the guest kernel by tests/vm/test_shares_coherence.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymachine_agent import mountinfo, revalidate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")


def _tree(tmp_path: Path) -> tuple[Path, set[str]]:
    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    (share / "a.txt").write_text("a")
    (share / "sub" / "b.txt").write_text("b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (share / "link").symlink_to(outside)
    return share, {".", "a.txt", "missing", "sub/b.txt", "sub/new/deeper", "link/planted", "a.txt/x"}


def test_the_walk_looks_names_up_but_never_creates_or_follows(tmp_path: Path) -> None:
    share, rels = _tree(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    looked_up = revalidate._refresh_share(str(share), rels)
    # each name once, top-down, stopping below what is missing, no folder or a link:
    # a.txt missing sub sub/b.txt sub/new link a.txt/x is below a file: a.txt (already), then stop
    assert looked_up == 6
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "outside" / "planted").exists()
    assert not [p for p, _ in mountinfo.mounts() if os.path.basename(p).startswith("fresh-")]


def test_refresh_leaves_paths_outside_virtiofs_alone(tmp_path: Path) -> None:
    share, _ = _tree(tmp_path)
    assert revalidate.refresh([str(share / "a.txt"), str(share / "missing")]) == 0
    assert not (share / "missing").exists()
