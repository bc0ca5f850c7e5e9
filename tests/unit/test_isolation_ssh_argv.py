"""`pymachine ssh` ignores the user's ssh_config: the argv we build (what the real client makes of it under a
hostile ~/.ssh/config is tests/privileged/test_isolation_ssh_config.py)."""

from __future__ import annotations

import pytest

from pymachine.hostvm import paths, ssh, store


@pytest.fixture
def machine_dev(pymachine_home):  # type: ignore[no-untyped-def]
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    store.write_json(mp.state, {"ssh_port": 40022})
    return mp


def test_argv_reads_no_config_and_restates_every_safe_option(machine_dev) -> None:  # type: ignore[no-untyped-def]
    argv = ssh.ssh_argv("dev", ["true"])
    assert argv[1:3] == ["-F", "/dev/null"]
    options = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    for option in (
        "ForwardAgent=no",
        "ForwardX11=no",
        "ClearAllForwardings=yes",
        "PermitLocalCommand=no",
        "ControlMaster=no",
        "ControlPath=none",
        "ProxyCommand=none",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "StrictHostKeyChecking=yes",
        "GlobalKnownHostsFile=/dev/null",
        f"UserKnownHostsFile={machine_dev.known_hosts}",
    ):
        assert option in options
