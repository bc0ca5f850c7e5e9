"""Random layer tars built from the tricky pieces (.., absolute paths, symlinks in and out, hardlinks,
whiteouts, replacements): every one either unpacks or fails with an ImageError, and nothing outside the
store changes. Fixed seeds: a failure is reproducible."""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest
from support.registry import entry, file, tar_bytes

from pymachine_agent.images import ImageError, ImageStore

NAMES = ["a", "b", "c", "..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh...", "x y"]


def _path(rng: random.Random, outside: Path) -> str:
    if rng.random() < 0.08:
        return str(outside / rng.choice(["p", "q"]))
    parts = [rng.choice(NAMES) for _ in range(rng.randint(1, 4))]
    return ("/" if rng.random() < 0.05 else "") + "/".join(parts)


def _layer(rng: random.Random, outside: Path) -> bytes:
    items: list = []
    for _ in range(rng.randint(1, 12)):
        name = _path(rng, outside)
        kind = rng.random()
        if kind < 0.35:
            items.append(file(name, b"data"))
        elif kind < 0.55:
            items.append(entry(name + "/", tarfile.DIRTYPE, 0o755))
        elif kind < 0.75:
            target = rng.choice([str(outside), "/", "../..", "a", "b/c", "/etc", _path(rng, outside)])
            items.append(entry(name, tarfile.SYMTYPE, 0o777, linkname=target))
        elif kind < 0.9:
            items.append(entry(name, tarfile.LNKTYPE, 0o644, linkname=_path(rng, outside)))
        else:
            items.append(entry(name, tarfile.CHRTYPE, 0o600, devmajor=rng.choice([0, 1]), devminor=0))
    return tar_bytes(items)


def _snapshot(path: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            out.append((os.path.join(dirpath, n), st.st_mode, st.st_size))
    return sorted(out)


@pytest.mark.parametrize("seed", range(int(os.environ.get("FUZZ_SEEDS", "6"))))
def test_random_tricky_layers_never_escape(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    sandbox = tmp_path / "sandbox"
    outside = sandbox / "outside"
    outside.mkdir(parents=True)
    (outside / "keep").write_text("k")
    store = ImageStore(sandbox / "deep" / "store")
    watched = [tmp_path, Path("/etc")]
    before = [_snapshot(p) if p != Path("/etc") else sorted(os.listdir(p)) for p in watched]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(60):
        layer = _layer(rng, outside)
        try:
            store.add_layer(io.BytesIO(layer), None)
            outcomes["ok"] += 1
        except ImageError:
            outcomes["refused"] += 1
        assert list((store.root / "tmp").iterdir()) == []
    after_tmp = [
        p for p in _snapshot(tmp_path) if "/deep/store/" not in p[0] and not p[0].endswith("/deep/store")
    ]
    before_tmp = [p for p in before[0] if "/deep/store/" not in p[0] and not p[0].endswith("/deep/store")]
    assert after_tmp == before_tmp  # nothing written, changed or deleted outside the store
    assert sorted(os.listdir("/etc")) == before[1]
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0  # the generator exercises both paths
