"""Intermediate (parent) images as Docker treats them: hidden from `docker images` unless `-a`, never
dangling, kept by `docker image prune`, removed by `prune -a`; on the store and through the real docker CLI
after a real `docker build`. Also the store's temporary folders (nothing accumulates)."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from support.agent import BUSYBOX_REF, Agent
from support.build import build_agent, write_context  # noqa: F401 - build_agent is a fixture
from support.registry import busybox_archive

from pymachine_agent.images import ImageStore

BB = "pymachine/busybox:latest"


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "store")
    assert s.load(io.BytesIO(busybox_archive())) == [BB]
    return s


def _step(store: ImageStore, parent: str, env: str, tag: str | None = None) -> str:
    """A config-only child of `parent`, as the builder commits an ENV step (its record names the parent)."""
    return store.commit(None, parent, {"Env": [env]}, created_by=f"ENV {env}", tag=tag)


def _listed(store: ImageStore, **kwargs: object) -> set[str]:
    return {row["Id"] for row in store.list(**kwargs)}  # type: ignore[arg-type]


def test_an_untagged_parent_is_hidden_unless_all_and_is_not_dangling(store: ImageStore) -> None:
    base = store.resolve(BB)
    step = _step(store, BB, "A=1")
    top = _step(store, step, "B=2", tag="app:1")
    leaf = _step(store, step, "C=3")  # untagged, nothing builds on it: dangling
    assert store.record(step)["parent"] == base and store.record(top)["parent"] == step
    assert _listed(store) == {base, top, leaf}
    assert _listed(store, all_images=True) == {base, step, top, leaf}
    dangling = {"dangling": ["true"]}
    assert _listed(store, filters=dangling) == {leaf}
    assert _listed(store, filters=dangling, all_images=True) == {leaf}  # a parent is never dangling
    assert _listed(store, filters={"dangling": ["false"]}, all_images=True) == {base, step, top}


def test_prune_keeps_parents_of_kept_images_and_removes_a_dangling_chain(store: ImageStore) -> None:
    base = store.resolve(BB)
    step = _step(store, BB, "A=1")
    top = _step(store, step, "B=2", tag="app:1")
    chain_mid = _step(store, BB, "X=1")
    chain_leaf = _step(store, chain_mid, "X=2")  # untagged child of an untagged parent
    report = store.prune()
    # the dangling leaf goes, then its parent, now childless and untagged (Docker deletes the chain)
    assert report["ImagesDeleted"] == [{"Deleted": chain_leaf}, {"Deleted": chain_mid}]
    assert set(store.image_ids()) == {base, step, top}
    assert store.config(top)["config"]["Env"][-1] == "B=2" and store.layer_dirs(top)
    assert store.prune()["ImagesDeleted"] is None  # the build step under app:1 is cache, not dangling
    # untagging the top image (without rmi's own pruning of parents) makes the step dangling: listed, pruned
    store.remove("app:1", prune=False)
    assert _listed(store) == {base, step} and _listed(store, filters={"dangling": ["true"]}) == {step}
    assert store.prune()["ImagesDeleted"] == [{"Deleted": step}]
    assert store.image_ids() == [base]


def test_prune_all_removes_unused_images_with_their_parents_but_not_those_a_container_needs(
    store: ImageStore,
) -> None:
    base = store.resolve(BB)
    step = _step(store, BB, "A=1")
    used = _step(store, step, "B=2", tag="used:1")
    other = _step(store, BB, "C=3", tag="other:1")
    in_use = lambda image_id: ["c1"] if image_id == used else []  # noqa: E731
    report = store.prune(dangling_only=False, in_use=in_use)
    assert {"Untagged": "other:1"} in report["ImagesDeleted"] and {"Deleted": other} in report[
        "ImagesDeleted"
    ]
    assert set(store.image_ids()) == {base, step, used}  # the used image's chain stays whole
    report = store.prune(dangling_only=False)
    deleted = [r["Deleted"] for r in report["ImagesDeleted"] if "Deleted" in r]
    assert deleted == [used, step, base]  # children first, then each parent left childless
    assert store.image_ids() == [] and list((store.root / "layers").iterdir()) == []


def test_spool_dir_is_one_folder_and_temporary_files_leave_nothing(store: ImageStore) -> None:
    before = sorted(p.name for p in (store.root / "tmp").iterdir())
    for _ in range(3):
        with tempfile.TemporaryFile(dir=store.spool_dir()) as spool:
            spool.write(b"request body")
    assert store.spool_dir() == store.spool_dir() == store.root / "tmp" / "spool"
    assert sorted(p.name for p in (store.root / "tmp").iterdir()) == sorted({*before, "spool"})
    assert list(store.spool_dir().iterdir()) == []


def test_tmp_dir_reaps_only_old_empty_folders(store: ImageStore) -> None:
    old_empty, old_full, fresh_empty = store.tmp_dir(), store.tmp_dir(), store.tmp_dir()
    (old_full / "half-unpacked").mkdir()
    an_hour_ago = time.time() - 3700
    for d in (old_empty, old_full):
        os.utime(d, (an_hour_ago, an_hour_ago))
    spool = store.spool_dir()
    os.utime(spool, (an_hour_ago, an_hour_ago))
    mine = store.tmp_dir()
    assert mine.is_dir() and mine != old_empty
    assert not old_empty.exists()
    assert old_full.is_dir() and fresh_empty.is_dir() and spool.is_dir()  # stable spool folder never reaped
    for d in (old_full, fresh_empty, mine):
        shutil.rmtree(d)


# -- through the real docker CLI after a real `docker build` ------------------------------------------


def _ids(agent: Agent, *args: str) -> set[str]:
    return set(agent.docker("images", "-q", "--no-trunc", *args).stdout.split())


@pytest.fixture(scope="module")
def built(build_agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> tuple[Agent, Path, str, str]:  # noqa: F811
    """`docker build` of a two-step Dockerfile: returns the agent, the context, the step image and the top."""
    ctx = write_context(
        tmp_path_factory.mktemp("parents") / "ctx",
        {"Dockerfile": f"FROM {BUSYBOX_REF}\nRUN echo one > /one\nRUN echo two > /two\n"},
    )
    out = build_agent.docker("build", "-t", "inter:1", str(ctx), timeout=300).stdout
    shorts = re.findall(r"^ ---> ([0-9a-f]{12})$", out, re.M)
    assert len(shorts) == 3, out  # FROM, RUN one, RUN two
    step = build_agent.docker("image", "inspect", "-f", "{{.Id}}", shorts[1]).stdout.strip()
    top = build_agent.docker("image", "inspect", "-f", "{{.Id}}", "inter:1").stdout.strip()
    assert build_agent.docker("image", "inspect", "-f", "{{.Parent}}", top).stdout.strip() == step
    return build_agent, ctx, step, top


def _rebuild_is_cached(agent: Agent, ctx: Path, top: str) -> None:
    out = agent.docker("build", "-t", "inter:1", str(ctx), timeout=300).stdout
    assert out.count(" ---> Using cache") == 2, out
    assert agent.docker("image", "inspect", "-f", "{{.Id}}", "inter:1").stdout.strip() == top


def test_docker_images_hides_build_steps_and_image_prune_keeps_them(
    built: tuple[Agent, Path, str, str],
) -> None:
    agent, ctx, step, top = built
    listed = _ids(agent)
    assert top in listed and step not in listed
    assert "<none>" not in agent.docker("images").stdout
    assert step not in _ids(agent, "--filter", "dangling=true")
    pruned = agent.docker("image", "prune", "-f").stdout
    assert step[7:19] not in pruned and top[7:19] not in pruned
    assert agent.docker("image", "inspect", "-f", "{{.Id}}", step).stdout.strip() == step
    _rebuild_is_cached(agent, ctx, top)  # the build cache survived the prune


def test_docker_images_all_shows_build_steps(built: tuple[Agent, Path, str, str]) -> None:
    agent, _ctx, step, top = built
    assert {step, top} <= _ids(agent, "-a")


def test_docker_info_counts_every_image_like_images_a(built: tuple[Agent, Path, str, str]) -> None:
    agent, _ctx, step, _top = built
    every = _ids(agent, "-a")
    assert step in every and step not in _ids(agent)  # the build step is hidden from the default list
    assert int(agent.docker("info", "--format", "{{.Images}}").stdout) == len(every)


def test_image_prune_all_removes_build_steps_once_unused(built: tuple[Agent, Path, str, str]) -> None:
    agent, ctx, step, top = built
    _rebuild_is_cached(agent, ctx, top)
    agent.docker("rmi", "--no-prune", "inter:1")  # plain rmi would delete the unnamed step with it
    listed = _ids(agent)
    assert step in listed and top not in listed  # the step, childless now, is a dangling image
    assert step in _ids(agent, "--filter", "dangling=true")
    agent.docker("tag", step, "keep:1")  # a tag keeps it from `prune`, not from `prune -a`
    assert step not in agent.docker("image", "prune", "-f").stdout
    pruned = agent.docker("image", "prune", "-a", "-f").stdout
    assert "untagged: keep:1" in pruned and f"deleted: {step}" in pruned
    assert agent.docker("image", "inspect", step, check=False).returncode != 0
