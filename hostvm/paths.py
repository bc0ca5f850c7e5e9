"""Every on-disk path pymachine uses, in one place.

`PYMACHINE_HOME` relocates all state (tests point it at a temp folder). The default is the platform's user
data folder, kept short because unix socket paths are capped near 104 bytes on macOS and 108 on Linux.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import PymachineError

# The kernel's sun_path, NUL included: 104 bytes on macOS (and the BSDs), 108 on Linux.
SUN_PATH = {"darwin": 104, "linux": 108}


def home() -> Path:
    explicit = os.environ.get("PYMACHINE_HOME")
    if explicit:
        return Path(explicit).expanduser().absolute()
    if sys.platform == "darwin":
        # ~/Library/Application Support/... is long enough to push socket paths past the cap.
        return Path.home() / ".pymachine"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "pymachine"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "pymachine"


def ensure_home() -> Path:
    """Create the state folder, or fail with a message that says how to fix it."""
    root = home()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PymachineError(
            f"cannot write to the pymachine state folder {root}: {exc.strerror or exc}",
            hint="set PYMACHINE_HOME to a writable folder, or fix the folder's permissions",
        ) from exc
    return root


def cache_dir() -> Path:
    """Built artefacts (images), rebuildable from their recipes. `PYMACHINE_CACHE` lets tests that isolate
    PYMACHINE_HOME still share one image cache instead of rebuilding the guest image per test."""
    explicit = os.environ.get("PYMACHINE_CACHE")
    return Path(explicit).expanduser().absolute() if explicit else home() / "cache"


def image_cache_dir() -> Path:
    """Built guest images, one folder per recipe hash."""
    return cache_dir() / "images"


def container_image_cache_dir() -> Path:
    """Built base container image tarballs (busybox, debian), one file per recipe hash."""
    return cache_dir() / "container-images"


def accel_cache_file() -> Path:
    return cache_dir() / "accel.json"


def machines_dir() -> Path:
    return home() / "m"


def create_lock(name: str) -> Path:
    """Held by `create` of `name` until its folder is complete (beside, not in, the machine folders)."""
    return home() / "creating" / f"{name}.lock"


def settings_file() -> Path:
    return home() / "settings.json"


def apps_dir() -> Path:
    """Apps deployed by `git push` (hostvm/deploy): one folder per app."""
    return home() / "apps"


@dataclass(frozen=True)
class AppPaths:
    """The files of one app: its state, the bare repository `git push` reaches, the lock of its deploys."""

    name: str

    @property
    def dir(self) -> Path:
        return apps_dir() / self.name

    @property
    def state(self) -> Path:
        return self.dir / "app.json"

    @property
    def repo(self) -> Path:
        return self.dir / "repo.git"

    @property
    def lock(self) -> Path:
        return self.dir / "deploy.lock"


def app(name: str) -> AppPaths:
    return AppPaths(name)


@dataclass(frozen=True)
class MachinePaths:
    """The files of one machine. Socket names are short on purpose (see socket_path_limit)."""

    name: str

    @property
    def dir(self) -> Path:
        return machines_dir() / self.name

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def ssh_key(self) -> Path:
        """The client key pymachine logs in with."""
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        """The guest's SSH host key, generated on the host at create and pinned."""
        return self.dir / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.tar"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def qemu_pid(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def agent_pid(self) -> Path:
        return self.dir / "ha.pid"

    @property
    def agent_supervisor_pid(self) -> Path:
        return self.dir / "ha-super.pid"

    @property
    def agent_spare_pid(self) -> Path:
        return self.dir / "ha-spare.pid"

    @property
    def agent_log(self) -> Path:
        return self.dir / "ha.log"

    @property
    def agent_log_lock(self) -> Path:
        """Held by whoever writes or rotates ha.log (hostagent/logfile.py)."""
        return self.dir / "ha.log.lock"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def control_socket(self) -> Path:
        return self.dir / "ha.sock"

    @property
    def docker_socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def engine_port(self) -> Path:
        """The host end of the VM's virtio-serial engine port (QEMU listens; the host agent connects)."""
        return self.dir / "engine.port"


def machine(name: str) -> MachinePaths:
    return MachinePaths(name)


def socket_path_limit(platform: str = sys.platform) -> int:
    """The longest unix socket path `platform` binds, in bytes (macOS's 104-byte sun_path is the tightest)."""
    return SUN_PATH.get(platform, SUN_PATH["darwin"]) - 1


def check_socket_path(path: Path, platform: str = sys.platform) -> Path:
    if len(os.fsencode(str(path))) > socket_path_limit(platform):
        raise PymachineError(
            f"socket path is too long for the operating system ({len(str(path))} bytes): {path}",
            hint="set PYMACHINE_HOME to a shorter folder, e.g. ~/.pymachine",
        )
    return path
