"""Pure pieces of the machine CLI and SSH command line: argument splitting, remote quoting, pinned options,
and the store's atomic writes."""

from __future__ import annotations

import json
import shlex

import pytest

from pymachine.app.cli.machine_cmd import split_ssh_args
from pymachine.hostvm import paths, ssh, store


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ([], ("default", [])),
        (["dev"], ("dev", [])),
        (["--", "ls", "-l"], ("default", ["ls", "-l"])),
        (["dev", "--", "sh", "-c", "exit 3"], ("dev", ["sh", "-c", "exit 3"])),
        (["dev", "uptime"], ("dev", ["uptime"])),
    ],
)
def test_split_ssh_args(rest: list[str], expected: tuple[str, list[str]]) -> None:
    assert split_ssh_args(rest) == expected


def test_remote_command_keeps_argv() -> None:
    assert ssh.remote_command(["echo $HOME | wc -c"]) == "echo $HOME | wc -c"
    assert shlex.split(ssh.remote_command(["sh", "-c", "exit 3"])) == ["sh", "-c", "exit 3"]


def test_ssh_argv_pins_the_host_key(pymachine_home) -> None:  # type: ignore[no-untyped-def]
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    store.write_json(mp.state, {"ssh_port": 40022})
    argv = ssh.ssh_argv("dev", ["true"])
    joined = " ".join(argv)
    for option in (
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={mp.known_hosts}",
        "HostKeyAlias=pymachine-dev",
        "GlobalKnownHostsFile=/dev/null",
        "BatchMode=yes",
    ):
        assert f"-o {option}" in joined
    assert argv[argv.index("-p") + 1] == "40022"
    assert argv[-3:] == ["--", "root@127.0.0.1", "true"]
    assert "-t" in ssh.ssh_argv("dev")


def test_keys_and_pin(pymachine_home) -> None:  # type: ignore[no-untyped-def]
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    ssh.create_keys("dev")
    assert mp.ssh_key.stat().st_mode & 0o777 == 0o600
    assert mp.host_key.stat().st_mode & 0o777 == 0o600
    host_pub = (mp.dir / "ssh_host_ed25519_key.pub").read_text().split()
    assert mp.known_hosts.read_text().split() == ["pymachine-dev", host_pub[0], host_pub[1]]
    assert ssh.pinned_host_key("dev").get_base64() == host_pub[1]


def test_store_write_is_atomic_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "s.json"
    store.write_json(target, {"a": 1})
    store.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp files left behind
    assert store.read_json(tmp_path / "missing.json", {}) == {}
