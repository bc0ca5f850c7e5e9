"""The mistakes a newcomer makes on the first day, before any machine runs: each message names the way on,
and `--help` says what each argument is (s11 quality walk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pymachine.app.cli import main as climain
from pymachine.app.cli.machine_cmd import split_ssh_args
from pymachine.app.cli.main import main as cli_main
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import containers, paths, store


def test_an_unknown_verb_is_named_with_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["strat"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'strat' (did you mean 'start'?)\n")
    assert "__complete" not in err  # the completion scripts' hidden verb is nobody's choice
    with pytest.raises(SystemExit):
        cli_main(["container", "strat", "web"])
    assert "did you mean 'start'?" in capsys.readouterr().err


def test_run_without_an_image_asks_for_the_image_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["run"])
    err = capsys.readouterr().err
    assert "required: image\n" in err  # not "image, command": a run needs no command
    with pytest.raises(SystemExit):
        cli_main(["exec"])
    assert "required: container\n" in capsys.readouterr().err


def test_container_verbs_start_what_stop_stopped() -> None:
    parser = climain.build_parser()
    args = parser.parse_args(["container", "start", "web", "db"])
    assert args.containers == ["web", "db"] and args.func.__name__ == "_start"
    with pytest.raises(SystemExit):  # `pymachine container` alone: a usage error, not the top-level help
        parser.parse_args(["container"])


def test_stop_of_a_name_that_is_no_machine_points_at_the_container_verb(
    pymachine_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["stop", "web"]) == 1
    err = capsys.readouterr().err
    assert "machine 'web' does not exist" in err and "a container? pymachine container stop web" in err
    assert cli_main(["start", "web"]) == 1
    assert "pymachine container start web" in capsys.readouterr().err
    assert cli_main(["stop"]) == 1  # the default machine is missing: about the machine only
    assert "container" not in capsys.readouterr().err


def test_help_names_the_machine_a_verb_acts_on(capsys: pytest.CaptureFixture[str]) -> None:
    parser = climain.build_parser("devbox")  # as from $PYMACHINE_MACHINE=devbox
    for argv, wanted in ((["start", "--help"], "default: devbox"), (["ps", "--help"], "(default: devbox)")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        out = capsys.readouterr().out
        assert wanted in out, out
    with pytest.raises(SystemExit):
        parser.parse_args(["start", "--help"])
    assert "Start (resume a saved) machine" in capsys.readouterr().out  # a description, not only usage


def test_ssh_without_a_name_goes_to_the_chosen_machine() -> None:
    assert split_ssh_args([], "devbox") == ("devbox", [])
    assert split_ssh_args(["--", "uname"], "devbox") == ("devbox", ["uname"])
    args = climain.build_parser("devbox").parse_args(["ssh"])
    assert split_ssh_args(args.rest, args.default_machine) == ("devbox", [])


def test_docker_env_of_a_stopped_machine_says_docker_waits_for_its_start(
    pymachine_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    cfg = cfgmod.MachineConfig(
        name="dev", cpus=1, memory=cfgmod.DEFAULT_MEMORY, disk=cfgmod.DEFAULT_DISK, driver="qemu"
    )
    store.write_json(mp.config, cfg.to_json())
    assert cli_main(["docker-env", "--shell", "bash", "dev"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("export DOCKER_HOST=")  # still the exports: eval'd now, used after the start
    assert "note: machine 'dev' is stopped" in err and "pymachine start dev" in err


CTRL_C_IN_A_START = """
import sys
from pymachine.app.cli import main
from pymachine.hostvm import machines
from pymachine.hostvm.progress import StageProgress

def start(name, say, cold=False):
    say(StageProgress(1, 5, "domain up"))
    say(StageProgress(1, 5, "domain up", "done", 0.4))
    say(StageProgress(2, 5, "ssh banner"))
    raise KeyboardInterrupt  # what Ctrl-C raises while the stage waits

machines.start = start
sys.exit(main.main(["start", "dev"]))
"""


def test_ctrl_c_in_a_start_says_what_is_left_on_the_screen(pymachine_home: Path) -> None:
    """In a real terminal (a pty: the live display draws only there), read through a VT100 screen: the
    message must be on it after the display's last frame, not painted over."""
    import pty
    import subprocess
    import sys

    import pyte

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_IN_A_START], stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 130
    screen = pyte.Screen(120, 30)
    pyte.ByteStream(screen).feed(out)
    text = "\n".join(line.rstrip() for line in screen.display)
    assert "error: start of machine 'dev' interrupted: the VM may be left half started" in text, text
    assert "hint: finish it: pymachine start dev; or power it off: pymachine stop --shutdown dev" in text


@pytest.mark.parametrize(
    "message",
    [
        "starting qtaken: network setup failed: host port 127.0.0.1:18081 is already in use",
        "starting q: network setup failed: Bind for 0.0.0.0:18080 failed: port 18080/tcp is already "
        "allocated "
        "(published by container 6fbbead56aa6)",
        "starting q: host port 80/tcp is already in use in the guest (a process is bound to it)",
    ],
)
def test_a_taken_port_says_how_to_go_on(message: str) -> None:
    hint = containers.start_hint(message, "qtaken")
    assert "publish another host port (-p OTHER:CONTAINER)" in hint
    assert "'qtaken' was created but not started: pymachine rm qtaken" in hint


def test_other_start_failures_get_no_port_advice() -> None:
    assert containers.start_hint("starting q: address 10.88.0.5 is already in use on the network", "q") == ""
    assert containers.start_hint('starting q: exec: "nope": executable file not found in $PATH', "q") == ""


def test_a_container_whose_start_failed_reads_created_in_the_app_as_in_ps() -> None:
    """The engine's record after a start refused on a taken port (seen on the walk): the desktop app showed
    `Exited (128)` where `pymachine ps -a` (and docker) say `Created`."""
    from docker.models.containers import Container

    state = {
        "Status": "exited",
        "Running": False,
        "ExitCode": 128,
        "Error": "network setup failed: host port 127.0.0.1:18081 is already in use",
        "StartedAt": "0001-01-01T00:00:00Z",
        "FinishedAt": "2026-12-06T12:45:48.549763648Z",
    }
    never = Container(
        attrs={"Id": "4bfbd8775945" * 4, "Name": "/qtaken", "State": state, "Config": {"Image": "b"}}
    )
    assert containers.summary(never)["Status"] == containers.status_text(state) == "Created"
    ran = {**state, "StartedAt": "2026-12-06T12:40:00Z", "ExitCode": 137}
    stopped = Container(
        attrs={"Id": "6fbbead56aa6" * 4, "Name": "/qweb", "State": ran, "Config": {"Image": "b"}}
    )
    assert containers.summary(stopped)["Status"] == "Exited (137)"


def test_stop_help_says_when_its_timeout_applies(capsys: pytest.CaptureFixture[str]) -> None:
    """The default stop saves the state and waits for no power-off: --timeout is the power-off's."""
    with pytest.raises(SystemExit):
        climain.build_parser().parse_args(["stop", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a power-off (--shutdown, or a state that cannot be saved): seconds to wait" in out
    from pymachine.hostvm.machines import STOP_TIMEOUT

    assert f"default {STOP_TIMEOUT['kvm']:.0f}; {STOP_TIMEOUT['tcg']:.0f} without an accelerator" in out
