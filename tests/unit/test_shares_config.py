"""Machine shares in config: defaults, `PATH[:ro]` parsing, validation with the field, old config.json."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from pymachine.hostvm.config import MachineConfig, Share, build, default_shares, parse_share
from pymachine.hostvm.errors import UsageError

HOST = dict(ncpus_host=2, fallback_driver="libvirt")


def test_default_shares_are_home_and_the_temp_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="pm-share-"))
    try:
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        cfg = build(**HOST)
        assert cfg.shares == [Share(str(home)), Share(str(temp))]
        assert cfg.share_transport == "auto"
        assert build(**HOST, home_mount=False).shares == []
    finally:
        temp.rmdir()


def test_roots_home_is_not_shared_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert default_shares() == [Share(str(tmp_path))]


def test_home_inside_the_temp_folder_is_shared_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path.parent))
    assert default_shares() == [Share(str(tmp_path.parent))]


def test_mounts_parse_ro_and_normalise(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg = build(**HOST, home_mount=False, mounts=[f"{tmp_path}/a/", f"{tmp_path}//b/../b:ro"])
    assert cfg.shares == [Share(f"{tmp_path}/a"), Share(f"{tmp_path}/b", readonly=True)]
    assert parse_share("/x:rw") == Share("/x")


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("relative/dir", "'relative/dir' is not an absolute path"),
        ("/", "'/' is the whole file system"),
        ("/etc", "'/etc' is a system folder"),
        ("/usr/share:ro", "'/usr/share' is inside the system folder /usr"),
        ("/proc", "'/proc' is a system folder"),
        ("/home", "'/home' is a system folder that holds everyone's files"),
        ("/no/such/folder", "'/no/such/folder' does not exist on this host"),
    ],
)
def test_bad_mounts_are_refused_with_the_field(mount: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        build(**HOST, home_mount=False, mounts=[mount])
    assert f"shares: {message}" in err.value.message


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        build(**HOST, home_mount=False, mounts=[str(tmp_path / "f")])


def test_nested_and_duplicate_shares_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(UsageError) as err:
        build(**HOST, home_mount=False, mounts=[str(tmp_path), f"{tmp_path}/in:ro", f"{tmp_path}/"])
    msg = err.value.message
    assert f"'{tmp_path}/in' overlaps the share {tmp_path}" in msg
    assert f"'{tmp_path}' is already shared" in msg


def test_every_problem_is_listed_together(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        build("Bad_Name", **HOST, home_mount=False, mounts=["/etc", "rel"], share_transport="nfs")
    msg = err.value.message
    for part in ("name:", "shares: '/etc'", "shares: 'rel'", "share_transport: 'nfs' is not one of"):
        assert part in msg


def test_symlink_to_a_system_folder_is_refused(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "etc-link")
    with pytest.raises(UsageError, match="is a system folder"):
        build(**HOST, home_mount=False, mounts=[str(tmp_path / "etc-link")])


def test_json_round_trip_and_old_config_without_shares(tmp_path: Path) -> None:
    cfg = build(**HOST, home_mount=False, mounts=[f"{tmp_path}:ro"], share_transport="9p")
    data = cfg.to_json()
    assert data["shares"] == [{"path": str(tmp_path), "readonly": True}]
    assert MachineConfig.from_json(data) == cfg
    old = {k: v for k, v in data.items() if k not in ("shares", "share_transport")}
    loaded = MachineConfig.from_json(old)
    assert (loaded.shares, loaded.share_transport) == ([], "auto")
