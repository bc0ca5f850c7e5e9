"""A verb that needs a running machine names its state as `list` does: a machine that `stop` saved is
"saved" (the next start resumes it) in `ps`, `ssh` and `version`, not "stopped" beside a `list` that says
saved."""

from __future__ import annotations

import pytest
from support.machine_files import write_machine

from pymachine.app.cli import main as cli
from pymachine.hostvm import machines, savestate, store


def _saved_machine(name: str) -> None:
    write_machine(name)
    saved = savestate.files(name)
    saved.meta.parent.mkdir(parents=True, exist_ok=True)
    store.write_json(saved.meta, {"size": 1, "saved_at": 0})
    saved.state.write_bytes(b"state")


@pytest.mark.parametrize("argv", [["ps", "--machine", "sv"], ["ssh", "sv", "--", "true"], ["version"]])
def test_a_saved_machine_is_called_saved(pymachine_home, capsys, monkeypatch, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    _saved_machine("sv")
    monkeypatch.setenv("PYMACHINE_MACHINE", "sv")
    assert machines.get("sv").state == "stopped" and machines.get("sv").saved_state
    code = cli.main(argv)
    out, err = capsys.readouterr()
    said = out + err  # version prints the client's part, and the machine's state where the engine's would be
    assert "machine 'sv' is saved" in said and "is stopped" not in said, said
    if argv[0] != "version":
        assert code == 1 and "hint: start it: pymachine start sv" in err


def test_a_missing_default_machine_names_the_ones_there_are(pymachine_home, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("PYMACHINE_MACHINE", raising=False)
    assert cli.main(["ps"]) == 1
    assert "hint: create it: pymachine create default --start" in capsys.readouterr().err
    _saved_machine("sv")  # a newcomer's one machine, not named default
    assert cli.main(["ps"]) == 1
    err = capsys.readouterr().err
    assert "error: machine 'default' does not exist" in err
    assert "the machines here: sv;" in err and "export PYMACHINE_MACHINE=sv" in err, err
    assert cli.main(["--machine", "sv", "ps"]) == 1  # what the hint says reaches the machine
    assert "machine 'sv' is saved" in capsys.readouterr().err
    assert cli.main(["start", "sx"]) == 1  # a typo: the names, without the advice on picking a default
    err = capsys.readouterr().err
    assert "hint: the machines here: sv; or create it: pymachine create sx;" in err, err
