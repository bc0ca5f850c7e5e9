"""Opening the image store (every guest agent start) reads each image record and each layer.json once: the
orphan sweep and the check of unflushed layers share one walk (images/removal.py LayerUsage), and still do
both jobs."""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.registry import docker_archive, entry, file, tar_bytes

from pymachine_agent.images.store import ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps owners: needs root")


def layer(name: str) -> bytes:
    return tar_bytes([entry("data/", tarfile.DIRTYPE, 0o755), file(f"data/{name}", os.urandom(500))])


def test_open_reads_each_record_and_layer_json_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path / "images")
    base = layer("base")
    for n in range(4):  # four images sharing a base layer, each with two of its own
        archive = docker_archive([base, layer(f"{n}a"), layer(f"{n}b")], [f"img{n}:1"])
        assert store.load(io.BytesIO(archive)) == [f"img{n}:1"]
    # an orphan a crash left (a layer no image names): the sweep still removes it
    orphan = store.add_layer(io.BytesIO(layer("orphan")), None)["diff_id"]
    reads: Counter[str] = Counter()
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.suffix == ".json":
            reads[str(self.relative_to(store.root))] += 1
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    reopened = ImageStore(tmp_path / "images")
    monkeypatch.undo()
    records = [k for k in reads if k.startswith("images/")]
    metas = [k for k in reads if k.endswith("/layer.json")]
    assert len(records) == 4 and len(metas) >= 1 + 4 * 2  # the walk read them all (and the orphan's)
    assert {k: n for k, n in reads.items() if n > 1} == {}
    assert not reopened.has_layer(orphan)
    assert len({d for i in reopened.image_ids() for d in reopened.record(i)["layers"]}) == 9
