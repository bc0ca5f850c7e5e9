"""Commit config handling: `--change` instructions and the engine's {"config", "changes"} shape; the orphan
layer sweep of prune."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from support.registry import busybox_archive, docker_archive, file, tar_bytes

from pymachine_agent.images import ImageError, ImageStore, UnsafeLayerError
from pymachine_agent.images.changes import apply

BB = "pymachine/busybox:latest"


def test_change_instructions() -> None:
    base = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/srv"}
    out = apply(
        base,
        [
            'CMD ["echo", "hi"]',
            "ENTRYPOINT /run.sh --x",
            "ENV A=2 B='two words'",
            "ENV C legacy value",
            "EXPOSE 80 53/udp",
            'LABEL a=b "c d"=e',
            "VOLUME /data /logs",
            "WORKDIR app",
            "USER 1000:1000",
            "STOPSIGNAL SIGINT",
            "onbuild RUN true",
        ],
    )
    assert out["Cmd"] == ["echo", "hi"]
    assert out["Entrypoint"] == ["/bin/sh", "-c", "/run.sh --x"]
    assert out["Env"] == ["PATH=/bin", "A=2", "B=two words", "C=legacy value"]
    assert out["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert out["Labels"] == {"a": "b", "c d": "e"}
    assert out["Volumes"] == {"/data": {}, "/logs": {}}
    assert out["WorkingDir"] == "/srv/app" and out["User"] == "1000:1000" and out["StopSignal"] == "SIGINT"
    assert out["OnBuild"] == ["RUN true"]
    assert base["Env"] == ["PATH=/bin", "A=1"]  # the input is not modified
    with pytest.raises(ImageError, match="RUN is not a valid change command") as err:
        apply(base, ["RUN rm -rf /"])
    assert err.value.status == 400


def test_commit_with_the_engines_config_and_changes_shape(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    container_config = {"Env": ["PATH=/bin", "X=1"], "Cmd": ["sleep", "1"], "Hostname": "abc", "Image": BB}
    upper = tmp_path / "upper"
    (upper / "srv").mkdir(parents=True)
    (upper / "srv/f").write_text("x")
    new_id = store.commit(
        upper,
        BB,
        {"config": container_config, "changes": ["CMD cat /srv/f", "ENV Y=2"]},
        comment="snap",
        author="me",
        tag="snap:1",
    )
    cfg = store.inspect("snap:1")["Config"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "cat /srv/f"] and cfg["Env"] == ["PATH=/bin", "X=1", "Y=2"]
    assert cfg["Hostname"] == "abc" and "config" not in cfg and "changes" not in cfg
    info = store.inspect(new_id)
    assert info["Author"] == "me" and store.history(new_id)[0]["Comment"] == "snap"
    assert (store.layer_dirs(new_id)[-1] / "srv/f").read_text() == "x"


def test_prune_sweeps_layers_a_failed_load_left(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    good = tar_bytes([file("fine", b"ok")])
    with pytest.raises(UnsafeLayerError):
        store.load(io.BytesIO(docker_archive([good, tar_bytes([file("/abs", b"x")])], ["bad:1"])))
    # a load commits nothing before every layer checked out (images/staging.py): the good layer is not kept
    assert len(list((store.root / "layers").iterdir())) == 1
    # a layer a crash left between its unpacking and the image record (a pull, a commit) is an orphan
    store.add_layer(io.BytesIO(good), None)
    assert len(list((store.root / "layers").iterdir())) == 2  # busybox + the orphan "good" layer
    report = store.prune()
    assert report["ImagesDeleted"] is None and report["SpaceReclaimed"] == 2
    assert [p.name for p in (store.root / "layers").iterdir()] == [
        store.config(BB)["rootfs"]["diff_ids"][0][7:]
    ]
    assert store.exists(BB)
    # a config blob written just before a crash (no image record) is swept too; referenced blobs stay
    orphan = store.write_blob(b'{"rootfs": {"diff_ids": []}}')
    kept = sorted(p.name for p in (store.root / "blobs/sha256").iterdir() if p.name != orphan[7:])
    store.prune()
    assert sorted(p.name for p in (store.root / "blobs/sha256").iterdir()) == kept
    assert store.inspect(BB)["Id"][7:] in kept


def test_a_committed_image_saves_and_loads_with_the_same_id(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "hello").write_text("hi")
    new_id = store.commit(upper, BB, {}, tag="saved:c")
    diff_id = store.config(new_id)["rootfs"]["diff_ids"][-1]
    assert list(store.layer_meta(diff_id)["blobs"].values()) == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ]
    out = io.BytesIO()
    store.save(["saved:c"], out)
    other = ImageStore(tmp_path / "other")
    assert other.load(io.BytesIO(out.getvalue())) == ["saved:c"]
    assert other.resolve("saved:c") == new_id
    assert (other.layer_dirs("saved:c")[-1] / "hello").read_text() == "hi"
