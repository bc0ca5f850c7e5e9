"""Machine settings after create (hostvm/machine_settings.py): validation against the host, the diff a running
machine has pending, the saved state a change makes useless, and the one operation on a machine folder
(config.json, a real qcow2 grown by qemu-img) that `pymachine set` and `mount add|rm` share."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pymachine.app.cli.main import main
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machine_settings as ms
from pymachine.hostvm import machines, paths, savestate, store
from pymachine.hostvm.config import GiB, MiB, Share
from pymachine.hostvm.errors import UsageError

HOST = ms.HostLimits(cpus=4, memory=8 * GiB)


def _cfg(tmp_path: Path, **over: object) -> cfgmod.MachineConfig:
    (tmp_path / "a").mkdir(exist_ok=True)
    cfg = cfgmod.build("dev", ncpus_host=4, fallback_driver="qemu", driver="qemu", home_mount=False,
                       mounts=[str(tmp_path / "a")], cpus=2, memory="1G", disk="8G")  # fmt: skip
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_every_problem_comes_back_with_its_field(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    req = ms.SettingsRequest(
        cpus=5, memory="9G", disk="4G", add_shares=("rel/dir",), remove_shares=("/nope",)
    )
    with pytest.raises(UsageError) as err:
        ms.plan(cfg, req, HOST)
    fields = dict(err.value.problems)
    assert fields["cpus"] == "must be between 1 and 4 (this host's cores), got 5"
    assert fields["memory"] == "must be at most 8 GiB (this host's memory), got 9G"
    assert fields["disk"].startswith("can only grow: it is 8G now, got 4G")
    assert [f for f, _ in err.value.problems].count(
        "shares"
    ) == 2  # the unknown removal and the relative path
    assert "'/nope' is not shared with machine 'dev'" in err.value.message
    assert err.value.hint and err.value.exit_code == 2
    with pytest.raises(UsageError, match="memory: must be at least 256M"):
        ms.plan(cfg, ms.SettingsRequest(memory="128M"), HOST)
    with pytest.raises(UsageError, match="cpus: 'two' is not a whole number"):
        ms.plan(cfg, ms.SettingsRequest(cpus="two"), HOST)


def test_the_shares_rules_are_the_ones_of_create(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (tmp_path / "a" / "in").mkdir()
    for path, why in (
        (str(tmp_path / "a"), "is already shared"),
        (str(tmp_path / "a" / "in"), "overlaps the share"),
        ("/etc", "is a system folder"),
        (str(tmp_path / "missing"), "does not exist on this host"),
    ):
        with pytest.raises(UsageError, match=why):
            ms.plan(cfg, ms.SettingsRequest(add_shares=(path,)), HOST)


def test_a_plan_says_what_changes_and_builds_the_new_config(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (tmp_path / "b").mkdir()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = ms.plan(cfg, ms.SettingsRequest(cpus="4", memory="1536M", disk="10G", add_shares=(f"{b}:ro",)), HOST)
    assert [str(c) for c in p.changes] == [
        "cpus 2 → 4", "memory 1G → 1536M", "disk 8G → 10G", f"shares {b}:ro"
    ]  # fmt: skip
    assert (p.config.cpus, p.config.memory, p.config.disk) == (4, 1536 * MiB, 10 * GiB)
    assert p.config.shares == [Share(a), Share(b, readonly=True)] and cfg.shares == [Share(a)]
    # the same value is no change; an odd disk size is rounded up to whole MiB (qemu-img wants sectors)
    assert ms.plan(cfg, ms.SettingsRequest(cpus=2, memory="1G", disk="8G"), HOST).changes == []
    assert ms.plan(cfg, ms.SettingsRequest(disk=8 * GiB + 1), HOST).config.disk == 8 * GiB + MiB
    # removing and adding one path flips its read-only flag
    flip = ms.plan(cfg, ms.SettingsRequest(remove_shares=(a,), add_shares=(f"{a}:ro",)), HOST)
    assert flip.config.shares == [Share(a, readonly=True)]
    assert (flip.removed, flip.added) == ([Share(a)], [Share(a, readonly=True)])


def test_unknown_host_memory_is_not_checked(tmp_path: Path) -> None:
    p = ms.plan(_cfg(tmp_path), ms.SettingsRequest(memory="64G"), ms.HostLimits(cpus=4, memory=None))
    assert p.config.memory == 64 * GiB


def test_a_running_machine_shows_what_waits_for_its_next_start(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, cpus=4, memory=2 * GiB)
    started = {"settings": {"cpus": 2, "memory": GiB, "disk": 8 * GiB}}
    diff = ms.pending(cfg, started)
    assert [str(c) for c in diff] == ["cpus 2 → 4", "memory 1G → 2G"]
    assert ms.pending(cfg, {}) == []  # started before this was recorded: nothing claimed
    assert ms.pending(cfg, {"settings": ms.started_settings(cfg)}) == []
    shares = [{"path": "/srv/x", "pending": "add"}, {"path": "/srv/y", "pending": None}]
    m = SimpleNamespace(pending=[{"field": "cpus", "old": "2", "new": "4"}], shares=shares)
    assert ms.pending_summary(m) == "pending: cpus 2 → 4, shares /srv/x (at next start)"
    assert ms.pending_summary(SimpleNamespace(pending=[], shares=[])) == ""


def test_a_stop_with_pending_settings_shuts_down_instead_of_saving(tmp_path: Path) -> None:
    """Saved with the new config's fingerprint, the resume would run the old CPUs and call it current."""
    cfg = _cfg(tmp_path, cpus=4).to_json()
    started = {"shares": cfg["shares"], "settings": {"cpus": 2, "memory": GiB, "disk": 8 * GiB}}
    drv = SimpleNamespace(name="qemu", capabilities=SimpleNamespace(save_state=True, share_hotplug=True))
    with pytest.raises(savestate.NotSaved, match=r"settings changed since it started \(cpus 2 → 4\)"):
        savestate.save("dev", drv, cfg, started, lambda _m: None)


def test_a_saved_state_of_the_old_settings_boots_cold_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "home"))
    old = _cfg(tmp_path).to_json()
    f = savestate.files("dev")
    f.state.parent.mkdir(parents=True)
    f.temp.write_bytes(b"x" * 4096)
    savestate.commit("dev", savestate.meta_for(old, "tcg", 4096, savestate.crc32_file(f.temp)))
    assert savestate.check("dev", old, "tcg")[0] is not None
    new = ms.plan(_cfg(tmp_path), ms.SettingsRequest(cpus=3), HOST).config.to_json()
    assert savestate.check("dev", new, "tcg") == (None, savestate.WHY["config"])


@pytest.fixture
def machine(pymachine_home: Path, tmp_path: Path) -> str:
    """A created, never started machine of the qemu driver: config.json and a real qcow2 of 64 MiB."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    (tmp_path / "a").mkdir()
    cfg = cfgmod.build("dev", ncpus_host=cfgmod.host_cpus(), fallback_driver="qemu", driver="qemu",
                       home_mount=False, mounts=[str(tmp_path / "a")], memory="512M", disk="64M")  # fmt: skip
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mp.disk), "64M"], check=True)
    store.write_json(mp.config, cfg.to_json())
    return "dev"


def _virtual_size(path: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True)
    return int(json.loads(out.stdout)["virtual-size"])


def test_configure_writes_the_config_and_grows_the_disk_of_a_stopped_machine(
    machine: str, tmp_path: Path
) -> None:
    (tmp_path / "b").mkdir()
    before = paths.machine(machine).config.read_bytes()
    with pytest.raises(UsageError):  # a refused change writes nothing
        machines.configure(machine, ms.SettingsRequest(memory="1G", disk="32M"))
    assert paths.machine(machine).config.read_bytes() == before
    result = machines.configure(
        machine, ms.SettingsRequest(memory="768M", disk="128M", add_shares=(str(tmp_path / "b"),))
    )
    cfg = machines.load_config(machine)
    assert (cfg.memory, cfg.disk) == (768 * MiB, 128 * MiB)
    assert _virtual_size(paths.machine(machine).disk) == 128 * MiB
    assert not result.running and result.machine.disk == 128 * MiB and result.machine.pending == []
    assert ms.describe(result) == (
        f"machine 'dev': memory 512M → 768M, disk 64M → 128M, shares {tmp_path / 'b'}"
        " (applies at the next start)"
    )
    # `mount rm` is the same operation: its refusal lists the shares, its success says when
    with pytest.raises(UsageError, match=r"mount: '/srv/none' is not shared with machine 'dev' \(shares: "):
        machines.mount_rm(machine, "/srv/none")
    m, change = machines.mount_rm(machine, str(tmp_path / "b"))
    assert change.when == "next start" and [s["path"] for s in m.shares] == [str(tmp_path / "a")]


def test_a_saved_state_is_said_to_be_discarded(machine: str) -> None:
    f = savestate.files(machine)
    f.temp.write_bytes(b"x" * 4096)
    savestate.commit(machine, savestate.meta_for({}, "tcg", 4096, savestate.crc32_file(f.temp)))
    ctx = ms.context(machine)
    assert ctx.saved_state and not ctx.running and ctx.limits.cpus == cfgmod.host_cpus()
    assert ms.will_discard_saved_state(
        ctx, ms.plan(ctx.config, ms.SettingsRequest(cpus=1, memory="1G"), ctx.limits)
    )
    result = machines.configure(machine, ms.SettingsRequest(memory="1G"))
    assert ms.describe(result).endswith("; its saved state is discarded: the next start boots cold")


def test_pymachine_set_renders_the_change_and_the_errors(
    machine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkey_stdin = sys.stdin  # not a TTY under pytest: no question asked
    assert not monkey_stdin.isatty()
    assert main(["set", machine, "--memory", "1G"]) == 0
    assert capsys.readouterr().out == "machine 'dev': memory 512M → 1G (applies at the next start)\n"
    assert main(["set", machine, "--cpus", "999", "--disk", "1M"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid settings for machine 'dev': cpus: must be between 1 and ")
    assert "disk: can only grow: it is 64M now, got 1M" in err and "\nhint: " in err
    assert main(["set", machine]) == 2
    assert "error: nothing to set" in capsys.readouterr().err


def test_mount_add_of_a_missing_folder_says_so_and_how_to_fix_it(
    machine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "not made yet"
    assert main(["mount", "add", machine, str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"mount: '{missing}' does not exist on this host" in err, err
    # the hint is about the cause, not the shares list it used to point at
    assert f"hint: create the folder first (mkdir -p '{missing}') or correct the path" in err, err
    (tmp_path / "file").write_text("x")
    assert main(["mount", "add", machine, str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'file'}' is not a folder" in err and f"the one holding it: {tmp_path}" in err, err


def test_on_a_terminal_set_asks_before_throwing_a_saved_state_away(machine: str) -> None:
    from support.pty_session import pty_session

    f = savestate.files(machine)
    f.temp.write_bytes(b"x" * 4096)
    savestate.commit(machine, savestate.meta_for({}, "tcg", 4096, savestate.crc32_file(f.temp)))
    argv = [sys.executable, "-m", "pymachine.app.cli", "set", machine, "--memory", "1G"]

    def answer(word: bytes):  # type: ignore[no-untyped-def]
        return lambda _fd, out: word + b"\n" if out.endswith(b"[y/N] ") else None

    code, out = pty_session(argv, dict(os.environ), 24, 200, answer(b"n"))
    assert code == 1 and b"has a saved state; new settings throw it away" in out and b"nothing changed" in out
    assert machines.load_config(machine).memory == 512 * MiB
    code, out = pty_session(argv, dict(os.environ), 24, 200, answer(b"y"))
    assert code == 0 and b"memory 512M \xe2\x86\x92 1G" in out, out
    assert machines.load_config(machine).memory == GiB
