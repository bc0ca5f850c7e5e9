"""The system service: `/version`, `/info` and `/system/df`."""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import atomic
from .. import dockerview as view
from ..images import ImageStore
from ..protocol import AGENT_VERSION
from ..runtime import Runtime
from ..volumes import VolumeStore
from .records import ContainerRecords
from .sizes import container_sizes

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"


def _now_rfc3339() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


class SystemService:
    def __init__(
        self,
        *,
        state_dir: Path,
        runtime: Runtime,
        records: ContainerRecords,
        images: ImageStore,
        volumes: VolumeStore,
    ) -> None:
        self.state_dir = state_dir
        self.runtime = runtime
        self.records = records
        self.images = images
        self.volumes = volumes

    def version(self) -> dict[str, Any]:
        uname = os.uname()
        return {
            "Platform": {"Name": "pymachine"},
            "Components": [
                {
                    "Name": "Engine",
                    "Version": AGENT_VERSION,
                    "Details": {
                        "ApiVersion": API_VERSION,
                        "MinAPIVersion": MIN_API_VERSION,
                        "Os": "linux",
                        "Arch": _arch(),
                        "KernelVersion": uname.release,
                        "GitCommit": "pymachine",
                        "GoVersion": "python" + sys.version.split()[0],
                        "BuildTime": "",
                        "Experimental": "false",
                    },
                }
            ],
            "Version": AGENT_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "pymachine",
            "GoVersion": "python" + sys.version.split()[0],
            "Os": "linux",
            "Arch": _arch(),
            "KernelVersion": uname.release,
            "BuildTime": "",
        }

    def info(self) -> dict[str, Any]:
        states = self.runtime.list()
        running = sum(1 for s in states if s.status == "running")
        paused = sum(1 for s in states if s.status == "paused")
        uname = os.uname()
        try:
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            mem = 0
        cgv2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        return {
            "ID": _engine_id(self.state_dir),
            "Containers": len(states),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": len(states) - running - paused,
            "Images": len(self.images.list(all_images=True)),
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": threading.active_count(),
            "SystemTime": _now_rfc3339(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if cgv2 else "1",
            "KernelVersion": uname.release,
            "OperatingSystem": _os_name(),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": uname.machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "IndexConfigs": {
                    host: {"Name": host, "Mirrors": [], "Secure": False, "Official": False}
                    for host in sorted(self.images.insecure_registries)
                },
                "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                "Mirrors": [],
            },
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem,
            "DockerRootDir": str(self.state_dir),
            "Name": uname.nodename,
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": AGENT_VERSION,
            "Runtimes": {"pymachine": {"path": "pymachine_agent.runtime"}},
            "DefaultRuntime": "pymachine",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin"] + (["name=cgroupns"] if cgv2 else []),
            "Warnings": None if cgv2 else ["cgroup v1 host: resource limits are recorded but not enforced"],
        }

    def df(self) -> dict[str, Any]:
        containers = []
        for st in self.runtime.list():
            item = view.summary_view(st, view.empty_network_settings(), self.records.image_name(st))
            item.update(container_sizes(self.images, st))
            containers.append(item)
        images = self.images.list()
        for img in images:
            img["Containers"] = len(self.records.image_users(img["Id"]))
        vols = self.volumes.list()
        for v in vols:
            v["UsageData"] = {
                "Size": self.volumes.size(v["Name"]),
                "RefCount": len(self.records.volume_users(v["Name"])),
            }
        return {
            "LayersSize": sum(int(i.get("Size") or 0) for i in images),
            "Images": images,
            "Containers": containers,
            "Volumes": vols,
            "BuildCache": [],
        }


def _arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def _engine_id(state_dir: Path) -> str:
    path = state_dir / "engine-id"
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if not value:  # missing, or left empty by a crash before the atomic writes
        value = secrets.token_hex(16).upper()
        atomic.write_text(path, value)
    return value
