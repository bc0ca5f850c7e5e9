"""`pymachine ssh` under a hostile ~/.ssh/config: what the real OpenSSH client resolves from our argv
(`ssh -G` prints the effective configuration without connecting). The vm tier runs `pymachine ssh` itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.hostile_ssh import hostile_home, with_home

from pymachine.hostvm import paths, ssh, store

pytestmark = pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux)")


def resolved(argv: list[str], home: Path) -> dict[str, list[str]]:
    """The client's settings for `argv` (its destination kept, the remote command dropped)."""
    dest = argv.index("--")
    out = subprocess.run(
        with_home(home, [*argv[:dest], "-G", argv[dest + 1]]), capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, []).append(value)
    return settings


def test_a_hostile_user_config_changes_nothing(pymachine_home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mp = paths.machine("dev")
    mp.dir.mkdir(parents=True)
    store.write_json(mp.state, {"ssh_port": 40022})
    ssh.generate_keypair(mp.ssh_key, "dev")
    home = hostile_home(tmp_path, 45678, 45679)
    argv = ssh.ssh_argv("dev", ["true"])

    # the check can fail: the same client without our -F/-o picks every hostile setting up
    plain = resolved(["ssh", "--", "root@127.0.0.1"], home)
    assert plain["forwardagent"] == ["yes"] and plain["proxycommand"] == ["false"]
    assert plain["localforward"] == ["[127.0.0.1]:45678 [127.0.0.1]:22"]
    assert any(f.endswith("/id_user") for f in plain["identityfile"])

    got = resolved(argv, home)
    assert got["forwardagent"] == ["no"] and got["forwardx11"] == ["no"]
    assert got["clearallforwardings"] == ["yes"]
    assert "localforward" not in got and "dynamicforward" not in got
    assert "proxycommand" not in got and got["permitlocalcommand"] == ["no"] and "localcommand" not in got
    assert got["controlmaster"] == ["false"] and "controlpath" not in got
    assert got["identityagent"] == ["none"] and got["identitiesonly"] == ["yes"]
    assert got["identityfile"] == [str(mp.ssh_key)]
    assert got["stricthostkeychecking"] == ["true"]
    assert got["userknownhostsfile"] == [str(mp.known_hosts)]
