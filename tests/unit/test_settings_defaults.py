"""`pymachine create` takes cpus/memory/disk defaults from settings.json (the GUI's Settings panel writes it);
explicit flags win."""

from __future__ import annotations

import argparse
import json

import pytest

from pymachine.app.cli import machine_cmd
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import machines, paths
from pymachine.hostvm.errors import UsageError


def _write_settings(data: object) -> None:
    paths.settings_file().parent.mkdir(parents=True, exist_ok=True)
    paths.settings_file().write_text(json.dumps(data))


def test_no_settings_file_means_no_defaults(pymachine_home) -> None:  # type: ignore[no-untyped-def]
    assert cfgmod.settings_defaults() == {}
    assert cfgmod.with_settings(None, "2G", None) == ({"cpus": None, "memory": "2G", "disk": None}, {})


def test_settings_fill_only_unset_fields(pymachine_home) -> None:  # type: ignore[no-untyped-def]
    # the GUI's shape: text values, empty meaning "not set", plus keys that are not machine defaults
    _write_settings({"defaults": {"cpus": 1, "memory": "2G", "disk": ""}, "start_at_login": True})
    assert cfgmod.settings_defaults() == {"cpus": "1", "memory": "2G"}
    values, taken = cfgmod.with_settings(None, "512M", None)
    assert values == {"cpus": "1", "memory": "512M", "disk": None}
    assert taken == {"cpus": "1"}


def test_settings_values_are_validated_like_flags(pymachine_home) -> None:  # type: ignore[no-untyped-def]
    _write_settings({"defaults": {"memory": "lots"}})
    values, _ = cfgmod.with_settings(None, None, None)
    with pytest.raises(UsageError, match="memory: 'lots' is not a size"):
        cfgmod.build("dev", **values, ncpus_host=2, fallback_driver="qemu")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"defaults": "2G"}'])
def test_broken_settings(pymachine_home, content: str) -> None:  # type: ignore[no-untyped-def]
    paths.settings_file().parent.mkdir(parents=True, exist_ok=True)
    paths.settings_file().write_text(content)
    if content.startswith("{not"):
        with pytest.raises(UsageError, match="cannot read the settings file"):
            cfgmod.settings_defaults()
    else:
        assert cfgmod.settings_defaults() == {}


def test_create_cli_passes_settings_and_flags(
    pymachine_home, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    _write_settings({"defaults": {"cpus": "1", "memory": "768M", "disk": "10G"}})
    seen: dict[str, object] = {}

    def fake_create(name, cpus, memory, disk, driver, connect, progress, **shares):  # type: ignore[no-untyped-def]
        seen.update(name=name, cpus=cpus, memory=memory, disk=disk)
        cfg = cfgmod.build(name, cpus, memory, disk, driver, connect, ncpus_host=2, fallback_driver="qemu")
        return argparse.Namespace(name=cfg.name, cpus=cfg.cpus, memory=cfg.memory, disk=cfg.disk, shares=[])

    monkeypatch.setattr(machines, "create", fake_create)
    parser = argparse.ArgumentParser()
    machine_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["create", "dev", "--memory", "2G"])
    assert args.func(args) == 0
    assert seen == {"name": "dev", "cpus": "1", "memory": "2G", "disk": "10G"}
    out = capsys.readouterr()
    assert "1 CPU, 2G memory, 10G disk" in out.out
    assert "settings.json: cpus 1, disk 10G" in out.err
