"""What a newcomer reads on the README's tour before any machine runs: messages that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymachine.app.cli.main import main as cli_main
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm.errors import UsageError


def test_docker_env_of_a_machine_that_does_not_exist_says_so(
    pymachine_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["docker-env", "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no exports to eval: they pointed docker at a socket that nothing would ever serve
    assert "machine 'nope' does not exist" in err and "pymachine create nope" in err
    assert cli_main(["docker-env", "--unset", "nope"]) == 0  # undoing needs no machine
    assert "unset DOCKER_HOST" in capsys.readouterr().out


def test_several_invalid_settings_read_one_per_line() -> None:
    with pytest.raises(UsageError) as got:
        cfgmod.build(
            "Bad_Name", cpus="0", memory="2x", ncpus_host=2, fallback_driver="qemu", home_mount=False
        )
    lines = got.value.render().splitlines()
    assert lines[0] == "error: invalid machine settings:"
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["name", "cpus", "memory"]
    assert lines[4].startswith("hint: fix the fields above")
    with pytest.raises(UsageError) as one:
        cfgmod.build("dev", cpus="0", ncpus_host=2, fallback_driver="qemu", home_mount=False)
    one_line = "invalid machine settings: cpus: must be between 1 and 2 (the host's cores), got 0"
    assert str(one.value) == one_line


def test_list_with_no_machines_says_how_to_make_one(
    pymachine_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out.split()[:2] == ["NAME", "STATE"] and len(out.splitlines()) == 1  # the table: its header only
    assert "no machines yet: pymachine create dev --start" in err
    for quiet in (["list", "-q"], ["list", "--format", "json"]):  # what scripts read stays empty
        assert cli_main(quiet) == 0
        assert capsys.readouterr() == ("", "")


def test_create_names_each_share_with_its_own_transport() -> None:
    from pymachine.app.cli.machine_cmd import share_summary

    live = {"path": "/srv/data", "readonly": True, "transport": "virtiofs"}
    synced = {"path": "/home/me/src", "readonly": False, "transport": "sync"}
    # it said "/srv/data (ro), /home/me/src over virtiofs": the sync share is a copy on the VM's disk
    assert share_summary([live, synced]) == "/srv/data (ro) over virtiofs; /home/me/src (synced copy)"
    assert share_summary([]) == "none"


def test_a_new_disks_few_blocks_read_in_kib() -> None:
    from pymachine.hostvm.units import binary_size

    # the Machines tab's footer said "disk 200704 B of 8 GiB" for a machine just created
    assert binary_size(200704) == "196 KiB" and binary_size(1536) == "1.5 KiB"
    assert binary_size(512) == "512 B" and binary_size(2 * 1024**2) == "2 MiB"


def test_mount_lists_fourth_column_has_a_heading() -> None:
    from types import SimpleNamespace

    from pymachine.app.cli.machine_cmd import mount_rows

    synced = {"path": "/home/me/src", "readonly": False, "transport": "sync", "sync_state": "in sync"}
    rows = mount_rows(SimpleNamespace(shares=[synced]))  # type: ignore[arg-type]
    # "in sync" stood under no heading
    assert rows == [("PATH", "MODE", "TRANSPORT", "STATUS"), ("/home/me/src", "rw", "sync", "in sync")]


def test_typing_ahead_of_an_interactive_container_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pymachine run -it` takes seconds to make the container; what was typed meanwhile reached nobody
    (raw mode was entered with TCSAFLUSH, which discards the terminal's queued input)."""
    import os
    import pty
    import select

    from pymachine.app.cli import terminal

    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r", closefd=True)
    try:
        os.write(master, b"echo hi\n")  # typed before the attach; the line discipline holds it
        select.select([slave], [], [], 5)
        monkeypatch.setattr("sys.stdin", stdin)
        with terminal._raw(True):
            ready, _, _ = select.select([slave], [], [], 5)
            assert ready and os.read(slave, 100) == b"echo hi\n"
    finally:
        stdin.close()
        os.close(master)
