"""A bind source in a share is bound through an fd that cannot leave the share.

Whoever can write in a share (the host user, or a container that has the share mounted) can swap a folder
for a link to the VM's `/` after the engine checked the source at create/start and before the container's
init binds it. Bound by path, that container would get the VM's root filesystem at its mount point. The
runtime is driven directly here, with the spec the engine makes for a bind in a share (the `x-share=`
option), so the test hits the window the engine's own check cannot close.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runtime import output, spec

from pymachine_agent.runtime import Mount, Runtime, StartError
from pymachine_agent.runtime.mounts import SHARE_OPTION

MARKER = "pymachine-share-swap-marker"


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "share"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)  # a mount point, as virtiofs gives
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _bind_in_share(source: Path, share: Path) -> Mount:
    return Mount("bind", "/app", str(source), options=[SHARE_OPTION + str(share)])


def test_a_folder_swapped_for_a_link_to_the_vm_root_is_not_bound(
    rt: Runtime, layer: Path, share: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "vm-only"  # stands in for the VM's own files
    outside.mkdir()
    (outside / MARKER).write_text("secret of the VM\n")
    sub = share / "project"
    sub.mkdir()
    s = spec(layer, ["ls", "/app"], mounts=[_bind_in_share(sub, share)])
    rt.create(s)  # the engine checked `project` here: a folder in the share
    sub.rmdir()
    sub.symlink_to(outside)  # ... and the user (or a container with the share) swaps it afterwards
    with pytest.raises(StartError, match="leads out of the share"):
        rt.start(s.id)


def test_links_that_stay_in_the_share_still_work(rt: Runtime, layer: Path, share: Path) -> None:
    (share / "real").mkdir()
    (share / "real" / "hello").write_text("hi\n")
    (share / "alias").symlink_to(share / "real")  # an absolute link to a folder of the same share
    s = spec(layer, ["cat", "/app/hello"], mounts=[_bind_in_share(share / "alias", share)])
    rt.create(s)
    rt.start(s.id)
    assert rt.wait(s.id, timeout=60).exit_code == 0
    assert output(rt, s.id)[0] == "hi\n"
