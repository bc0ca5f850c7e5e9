"""Helpers for tests that need a real machine: an isolated PYMACHINE_HOME that shares the image cache,
unique machine names (libvirt domain names are global across homes), and the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import SHARED_CACHE

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StartedMachine:
    """A created and started machine living in its own PYMACHINE_HOME."""

    name: str
    home: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYMACHINE_HOME": str(self.home), "PYMACHINE_CACHE": str(SHARED_CACHE)}

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_home() -> Path:
    # Short (machine folders hold unix sockets), and not under /tmp, which others sweep of stale pm* folders.
    return Path(tempfile.mkdtemp(prefix="pmvm", dir="/var/tmp"))


@contextlib.contextmanager
def home_env(home: Path) -> Iterator[None]:
    """PYMACHINE_HOME / PYMACHINE_CACHE set for in-process façade calls, restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("PYMACHINE_HOME", "PYMACHINE_CACHE")}
    os.environ["PYMACHINE_HOME"], os.environ["PYMACHINE_CACHE"] = str(home), str(SHARED_CACHE)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYMACHINE_HOME": str(home), "PYMACHINE_CACHE": str(SHARED_CACHE)}
    return subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def ensure_libvirtd() -> None:
    """libvirtd (and /dev/kvm's group) as packaging/services.sh sets them up where no systemd does."""
    if not Path("/run/libvirt/libvirt-sock").exists() and os.geteuid() == 0:
        subprocess.run(["sh", str(REPO / "packaging" / "services.sh"), "libvirtd"], check=True)


@contextlib.contextmanager
def started_machine(
    prefix: str = "vm", driver: str | None = None, **create: object
) -> Iterator[StartedMachine]:
    """Create and start a machine in a fresh home; on exit delete it (forced) and remove the home. `create`
    goes to `machines.create` (e.g. mounts=[...], home_mount=False)."""
    from pymachine.hostvm import machines

    if driver in (None, "libvirt"):
        ensure_libvirtd()
    home, name = new_home(), unique_name(prefix)
    try:
        with home_env(home):
            machines.create(name, driver=driver, **create)  # type: ignore[arg-type]
            machines.start(name)
        yield StartedMachine(name, home)
    finally:
        with home_env(home), contextlib.suppress(Exception):
            if machines.exists(name):
                machines.delete(name, force=True)
        _remove(home)


def _remove(home: Path) -> None:
    # A host agent that is shutting down may still write its last event into the machine folder.
    for _ in range(20):
        shutil.rmtree(home, ignore_errors=True)
        if not home.exists():
            return
        time.sleep(0.5)
