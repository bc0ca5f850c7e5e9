"""The pure parts of machines on other hosts: `--host` parsing, the host checks' verdict (every problem at
once), and the shell text create installs (quoting that survives hostile names is the name pattern's job)."""

from __future__ import annotations

import subprocess

import pytest

from pymachine.hostvm import remote_install, remote_probe
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.remote_host import Target, parse_target

GOOD = {
    "uid": "0",
    "python": "/usr/bin/python3",
    "python_version": "3.11",
    "cgroup": "v2",
    "overlay": "yes",
    "nft_binary": "yes",
    "nft_kernel": "yes",
    "ip_binary": "yes",
    **{f"ns_{ns}": "yes" for ns in remote_probe.NAMESPACES},
}


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("root@build-1.lan", Target("root", "build-1.lan", 22)),
        ("ops@10.0.0.5:2222", Target("ops", "10.0.0.5", 2222)),
        ("host", Target("root", "host", 22)),
        ("me@[fd00::5]:22", Target("me", "fd00::5", 22)),
    ],
)
def test_parse_target(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["", "a@b@c", "host:99999", "host:port", "me@", "a b"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


def test_a_good_host_has_no_problems() -> None:
    found = remote_probe.findings(GOOD)
    assert found.problems == [] and found.warnings == []


def test_every_problem_is_reported_at_once() -> None:
    facts = {"uid": "1000", "python": "/usr/bin/python3", "python_version": "3.9", "cgroup": "v1"}
    found = remote_probe.findings(facts)
    text = "; ".join(found.problems)
    for expected in ("not root", "3.9", "namespaces: mnt", "overlayfs", "nft is missing", "ip is missing"):
        assert expected in text
    assert len(found.problems) == 6
    assert any("without memory/CPU/pids limits" in w for w in found.warnings)  # v1 runs, and says so


def test_the_supervisor_follows_what_the_host_has() -> None:
    assert remote_probe.findings({**GOOD, "systemd": "yes", "crontab": "yes"}).supervisor == "systemd"
    assert remote_probe.findings({**GOOD, "crontab": "yes"}).supervisor == "cron"
    assert remote_probe.findings(GOOD).supervisor == "initd"


def test_probe_output_parses_and_the_probe_is_posix_sh() -> None:
    assert remote_probe.parse("a=1\nnoise\nb=x=y\na=2\n") == {"a": "1", "b": "x=y"}
    assert subprocess.run(["sh", "-n"], input=remote_probe.PROBE, text=True).returncode == 0


@pytest.mark.parametrize("supervisor", ["systemd", "cron", "initd"])
def test_install_and_uninstall_scripts_are_valid_sh(supervisor: str) -> None:
    lay = remote_install.Layout("dev-1")
    for script in (
        remote_install.install(lay, supervisor),
        remote_install.uninstall(lay, supervisor, "pymachine0", "pymachine"),
        remote_install.run_script(lay),
        remote_install.initd_script(lay),
        remote_install.start(lay, supervisor),
        remote_install.stop(lay, supervisor),
    ):
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0, script


def test_uninstall_names_everything_install_made() -> None:
    lay = remote_install.Layout("dev-1")
    for supervisor, entry in (
        ("systemd", lay.systemd_unit),
        ("cron", remote_install.CRON_TAG + "dev-1"),
        ("initd", lay.initd),
    ):
        gone = remote_install.uninstall(lay, supervisor, "pymachine0", "pymachine")
        assert entry in remote_install.install(lay, supervisor) and entry in gone
        for path in (lay.code, lay.state, lay.run, lay.log):
            assert path in gone
        assert remote_install.GUARD_TABLE in gone
