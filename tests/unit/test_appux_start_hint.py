"""A failed start shows one hint: the failure's own where it has one, else its stage's generic one."""

from __future__ import annotations

import pytest
from support.machine_files import write_machine

from pymachine.app.cli import main as cli
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines, paths, store
from pymachine.hostvm.errors import PymachineError, StageFailed
from pymachine.hostvm.progress import StageProgress

DOMAIN_UP_HINT = next(s.hint for s in machines.STAGES if s.name == "domain up")


def _machine_with_a_gone_image(home, name: str) -> None:  # type: ignore[no-untyped-def]
    gone = {k: str(home / "gone" / k) for k in ("kernel", "initrd", "disk")}
    mp = write_machine(name, image=gone)
    # no disk to grow: it was made that size
    store.write_json(mp.state, {"settings": {"disk": cfgmod.DEFAULT_DISK}})
    for key in (mp.ssh_key, mp.host_key):  # the seed is written before the image is looked for
        key.write_text("key")
        (key.parent / (key.name + ".pub")).write_text("ssh-ed25519 AAAA key")


def test_a_start_whose_image_is_gone_says_only_how_to_recreate(pymachine_home, capsys) -> None:  # type: ignore[no-untyped-def]
    """The real start path: its first stage fails with an error that knows why (the image cache is gone)."""
    _machine_with_a_gone_image(pymachine_home, "hint1")
    with pytest.raises(StageFailed) as failed:
        machines.start("hint1")
    assert failed.value.hint == failed.value.cause.hint  # type: ignore[attr-defined]
    assert failed.value.hint.startswith("the image cache was cleared")
    assert "hypervisor" not in failed.value.hint and ";" not in failed.value.hint
    assert failed.value.stage_hint == DOMAIN_UP_HINT
    # the CLI renders that one value: one hint line, the specific one
    _machine_with_a_gone_image(pymachine_home, "hint2")
    assert cli.main(["start", "hint2"]) != 0
    err = capsys.readouterr().err
    hints = [line for line in err.splitlines() if line.startswith("hint:")]
    assert hints == [f"hint: {failed.value.hint}"], err
    assert "stage 1 of" in err and "base image" in err


def test_a_failure_without_its_own_hint_gets_the_stage_hint() -> None:
    stage = StageProgress(3, 5, "ssh auth", "failed", 1.0)
    for cause in (TimeoutError("no login"), PymachineError("no login")):
        failed = StageFailed(stage, cause, "sshd refused the machine's key", "/tmp/console.log")
        assert failed.hint == "sshd refused the machine's key"
        assert failed.render().count("hint:") == 1


def test_an_os_error_inside_a_stage_reads_as_words(pymachine_home, capsys) -> None:  # type: ignore[no-untyped-def]
    """A machine folder that lost its SSH key: the seed cannot be written, and start says which file."""
    _machine_with_a_gone_image(pymachine_home, "hint3")
    key = paths.machine("hint3").ssh_key
    (key.parent / (key.name + ".pub")).unlink()
    assert cli.main(["start", "hint3"]) != 0
    err = capsys.readouterr().err
    assert f"domain up failed: No such file or directory: {key}.pub\n" in err, err
    assert "Errno" not in err and "FileNotFoundError" not in err
