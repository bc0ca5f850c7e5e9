"""CLI start-up: a command imports only what it needs (bench/cli_start.py has the times), and every verb
still parses and dispatches when only its own module is loaded."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys

import pytest

from pymachine.app.cli import main as climain

pytestmark = pytest.mark.unit

# What a command that does not talk to an engine or a remote host must not wait for.
HEAVY = ("paramiko", "cryptography", "requests", "urllib3", "docker", "libvirt", "PySide6", "rich", "yaml")
PROBE = """
import json, sys
from pymachine.app.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def imported(tmp_path, *args: str) -> tuple[int, set[str]]:
    """The exit code of `pymachine ARGS` in a fresh home, and the modules it had imported at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYMACHINE_", "XDG_"))}
    env |= {"HOME": str(tmp_path), "PYMACHINE_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], [], ["lst"], ["--machine", "dev", "--help"]],
    ids=["version", "help", "no-verb", "usage-error", "global-option"],
)
def test_help_version_and_a_mistyped_verb_load_no_verb_module(tmp_path, args: list[str]) -> None:
    code, modules = imported(tmp_path, *args)
    assert code in (0, 2)
    assert heavy(modules) == []
    verb_modules = {f"pymachine.app.cli.{m}" for m in climain.MODULES.values()} - {
        "pymachine.app.cli.version_cmd"  # --version prints version_cmd.short()
    }
    assert sorted(verb_modules & modules) == []


# `app`: hostvm/deploy catches docker-py's exceptions in nine places, so its verbs load it (docs/cli.md)
EVERY_HELP = [[verb, "--help"] for verb in sorted(climain.MODULES) if verb != "app"]


@pytest.mark.parametrize(
    "args",
    [
        *EVERY_HELP,
        ["run"],  # a usage error: no image
        ["list"],
        ["ps"],  # no machine: says so before it needs an engine client
        ["inspect"],
        ["docker-env", "--unset"],
        ["__complete", "machines"],  # what a shell's TAB runs
    ],
    ids=lambda a: " ".join(a),
)
def test_commands_that_talk_to_no_engine_load_no_ssh_docker_or_libvirt(tmp_path, args: list[str]) -> None:
    code, modules = imported(tmp_path, *args)
    assert code in (0, 1, 2)
    assert heavy(modules) == []


def test_the_verb_table_is_what_the_modules_register() -> None:
    """VERBS gives `--help` its lines without importing the modules: it must say what they register."""
    listed = {verb: (module, text) for _, rows in climain.VERBS for verb, module, text in rows}
    registered: dict[str, tuple[str, str | None]] = {}
    for module in dict.fromkeys(climain.MODULES.values()):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"pymachine.app.cli.{module}").register(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        registered |= {verb: (module, helps.get(verb)) for verb in sub.choices}
    hidden = {verb: (module, None) for verb, module in climain.HIDDEN_VERBS.items()}
    assert registered == listed | hidden


@pytest.mark.parametrize("verb", sorted(climain.MODULES))
def test_every_verb_parses_with_only_its_module_loaded(verb: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        climain.main([verb, "--help"])
    assert exc.value.code == 0
    assert out.getvalue().startswith(f"usage: pymachine {verb}")


def test_a_verb_dispatches_to_its_handler_after_the_second_parse(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path))
    assert climain.main(["list", "--format", "json"]) == 0
    assert climain.main(["--machine", "nosuch", "ps"]) == 1
    assert "machine 'nosuch' does not exist" in capsys.readouterr().err


def test_a_mistyped_sub_verb_is_matched_against_its_own_verbs(capsys) -> None:
    """The top level names verbs from VERBS; a verb's own sub-verbs (`app releases`) from its parser."""
    with pytest.raises(SystemExit):
        climain.main(["app", "releasez"])
    assert "unknown command 'releasez' (did you mean 'releases'?)" in capsys.readouterr().err
