"""A machine as `create` leaves it on disk (its config, no VM), for tests of what the CLI says about it."""

from __future__ import annotations

from typing import Any

from pymachine.hostvm import config as cfgmod
from pymachine.hostvm import paths, store


def write_machine(name: str, **fields: Any) -> paths.MachinePaths:
    """A stopped qemu machine `name` under the current PYMACHINE_HOME (`fields` override the config's)."""
    mp = paths.machine(name)
    mp.dir.mkdir(parents=True)
    settings: dict[str, Any] = {
        "cpus": 1,
        "memory": cfgmod.DEFAULT_MEMORY,
        "disk": cfgmod.DEFAULT_DISK,
        "driver": "qemu",
    }
    cfg = cfgmod.MachineConfig(name=name, **(settings | fields))
    store.write_json(mp.config, cfg.to_json())
    return mp
