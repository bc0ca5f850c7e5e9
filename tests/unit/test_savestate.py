"""savestate.check/commit/discard: when a saved state may be resumed, and why not (pure files, no VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymachine.hostvm import savestate
from pymachine.hostvm.domain import ShareDevice

CONFIG = {
    "name": "m",
    "cpus": 2,
    "memory": 2**30,
    "disk": 8 * 2**30,
    "driver": "libvirt",
    "image": {"recipe_hash": "abc"},
    "shares": [{"path": "/srv/x", "readonly": False}],
    "share_transport": "auto",
}


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> savestate.Files:
    """A committed state of 1 MiB for machine `m`, as `save` leaves it."""
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path))
    f = savestate.files("m")
    f.state.parent.mkdir(parents=True)
    f.temp.write_bytes(bytes(range(256)) * 4096)
    size, crc = f.temp.stat().st_size, savestate.crc32_file(f.temp)
    savestate.commit("m", savestate.meta_for(CONFIG, "tcg", size, crc, ssh_port=2222))
    return f


def test_a_committed_state_is_good_for_the_same_config(saved: savestate.Files) -> None:
    meta, why = savestate.check("m", CONFIG, "tcg")
    assert why == "" and meta is not None and meta["ssh_port"] == 2222
    assert not saved.temp.exists()
    assert savestate.describe("m")["size"] == saved.state.stat().st_size  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cpus": 1}, "config changed"),
        ({"shares": []}, "config changed"),
        ({"share_transport": "sshfs"}, "config changed"),
        ({"image": {"recipe_hash": "new"}}, "guest image changed"),
    ],
)
def test_a_changed_config_or_image_refuses_it(saved: savestate.Files, change: dict, reason: str) -> None:
    meta, why = savestate.check("m", {**CONFIG, **change}, "tcg")
    assert meta is None and reason in why


def test_another_accelerator_or_agent_refuses_it(
    saved: savestate.Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "accelerator" in savestate.check("m", CONFIG, "kvm")[1]
    monkeypatch.setattr(savestate, "agent_version", lambda: "another")
    assert "guest agent changed" in savestate.check("m", CONFIG, "tcg")[1]


def test_damage_is_found(saved: savestate.Files) -> None:
    data = bytearray(saved.state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.state.write_bytes(bytes(data))
    assert "checksum mismatch" in savestate.check("m", CONFIG, "tcg")[1]
    saved.state.write_bytes(bytes(data[:-1]))
    assert "damaged (size" in savestate.check("m", CONFIG, "tcg")[1]


def test_a_state_without_its_json_or_the_reverse_is_incomplete(saved: savestate.Files) -> None:
    saved.meta.unlink()
    assert savestate.check("m", CONFIG, "tcg") == (None, "the saved state is incomplete")
    saved.state.unlink()
    assert savestate.check("m", CONFIG, "tcg") == (None, "")  # nothing saved at all
    saved.meta.write_text(json.dumps({"format": 1}))
    assert savestate.check("m", CONFIG, "tcg") == (None, "the saved state is incomplete")


def test_a_save_cut_short_leaves_only_a_part_file_that_discard_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path))
    f = savestate.files("m")
    f.state.parent.mkdir(parents=True)
    f.temp.write_bytes(b"QEVM half")
    assert savestate.check("m", CONFIG, "tcg") == (None, "")
    assert savestate.describe("m") == {"file": str(f.temp), "complete": False}
    savestate.discard("m")
    assert not f.temp.exists() and savestate.describe("m") is None


def test_guest_scripts_name_each_share_and_its_own_filesystem() -> None:
    devs = [
        ShareDevice("pm0", "/tmp", False, "virtiofs", "/x/pm0.sock"),
        ShareDevice("pm1", "/srv/a b", True, "9p"),
        ShareDevice("pm2", "/srv/s", False, "sshfs"),
    ]
    quiesce = savestate.quiesce_script(devs)
    assert quiesce.startswith(savestate.MOUNT_FUNCTIONS + "\nsync\n")
    assert "umount /tmp" in quiesce and "umount '/srv/a b'" in quiesce
    assert "/srv/s" not in quiesce  # sshfs rides the SSH link: the host agent unmounts it
    # a failure to unmount the second share mounts the first again
    assert "mount -t virtiofs -o nosuid,nodev pm0 /tmp" in quiesce.split("umount '/srv/a b'")[1]
    remount = savestate.remount_script(devs)
    assert remount.startswith(savestate.MOUNT_FUNCTIONS)
    # the kernel's form of the path in /proc/self/mounts (a space is \040), then the path itself for findmnt
    assert "pm_mounted '/srv/a\\040b' '/srv/a b' 9p" in remount and "pm_listed '/srv/a\\040b' 9p" in remount
    assert "pm_readahead /tmp 4096" in remount and "pm_readahead '/srv/a" not in remount  # virtiofs only
    assert "findmnt" not in remount.replace(savestate.MOUNT_FUNCTIONS, "")  # no exec but the mount itself
    assert "mountpoint" not in remount and "seq" not in remount
    assert "-o nosuid,nodev,ro,trans=virtio" in remount
    assert savestate.quiesce_script([devs[2]]) == "sync"
    assert savestate.mounts_field("/a b\tc\nd\\e") == "/a\\040b\\011c\\012d\\134e"
    assert savestate.clock_command(1700000000.5) == "date -s @1700000000.500 >/dev/null"


def test_the_shares_started_with_match_config_json_in_either_form() -> None:
    """state.json records every field of a share; config.json leaves out `"sync": false` (and an old state or
    a hot-plugged share has no `sync`): the same shares must not make `stop` shut down instead of saving (CI:
    every resume test shut down after sync shares came in)."""
    from pymachine.hostvm.savestate import same_shares

    configured = [
        {"path": "/home/me", "readonly": False},
        {"path": "/srv/big", "readonly": False, "sync": True},
    ]
    started = [
        {"path": "/home/me", "readonly": False, "sync": False},
        {"path": "/srv/big", "readonly": False, "sync": True},
    ]
    assert same_shares(configured, started)
    assert same_shares(None, [])
    assert not same_shares(configured, started[:1])
    assert not same_shares([{"path": "/home/me", "readonly": True}], started[:1])
    assert not same_shares([{"path": "/srv/big", "readonly": False}], started[1:])  # a live share became sync


def test_a_state_saved_without_the_engine_port_boots_cold_once_to_gain_it(saved: savestate.Files) -> None:
    """QEMU restores a state only into the same devices: a VM that would get the serial port now cannot
    resume one saved without it (the start boots cold and says why); one saved with it resumes."""
    meta, why = savestate.check("m", CONFIG, "tcg", engine_port=True)
    assert meta is None and "no engine port (virtio-serial)" in why
    assert savestate.check("m", CONFIG, "tcg", engine_port=False)[0] is not None  # the switch off: resumes
    size, crc = saved.state.stat().st_size, savestate.crc32_file(saved.state)
    saved.temp.write_bytes(saved.state.read_bytes())
    savestate.commit("m", savestate.meta_for(CONFIG, "tcg", size, crc, ssh_port=2222, engine_port=True))
    meta, why = savestate.check("m", CONFIG, "tcg", engine_port=True)
    assert why == "" and meta is not None and meta["engine_port"] is True
