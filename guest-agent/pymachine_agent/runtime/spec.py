"""What a container is made of (the spec the engine hands to the runtime) and what it is doing (its state).

Plain dataclasses that round-trip through JSON, because both the agent and each container's supervisor
process read them from the container's state folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Mount:
    """One mount inside the container.

    type: "bind" (a guest path), "volume" (a named volume: the engine resolves it to its folder and passes
    that folder as `source`) or "tmpfs". `options` are extra mount options: for tmpfs e.g. "size=64m",
    "mode=1777"; for bind/volume a propagation such as "rprivate" (default) or "rshared".
    """

    type: str
    target: str
    source: str = ""
    readonly: bool = False
    options: list[str] = field(default_factory=list)


@dataclass
class DeviceMapping:
    """--device: a guest device node (or a folder of them) created at `path_in_container` ("" = the same
    path), with `cgroup_permissions` ("rwm" subset) added to the container's device allowlist."""

    path_on_host: str
    path_in_container: str = ""
    cgroup_permissions: str = "rwm"


@dataclass
class Limits:
    """Resource limits in Docker's units (HostConfig names in comments). 0 means "not set".

    On cgroup v2 they become memory.max, memory.swap.max, memory.low, cpu.max, cpu.weight, cpuset.cpus,
    pids.max and io.weight. On a v1/hybrid host they are recorded but not enforced (a warning is logged).
    """

    memory: int = 0  # Memory, bytes
    memory_swap: int = 0  # MemorySwap: memory+swap in bytes; -1 unlimited swap; 0 = same as memory*2
    memory_reservation: int = 0  # MemoryReservation, bytes
    nano_cpus: int = 0  # NanoCpus (--cpus 1.5 = 1_500_000_000)
    cpu_quota: int = 0  # CpuQuota, µs per period
    cpu_period: int = 0  # CpuPeriod, µs (default 100000)
    cpu_shares: int = 0  # CpuShares (1024 = default weight 100)
    cpu_weight: int = 0  # direct cgroup v2 cpu.weight (1..10000); wins over cpu_shares
    cpuset_cpus: str = ""  # CpusetCpus
    pids_limit: int = 0  # PidsLimit; 0 or -1 = unlimited
    io_weight: int = 0  # BlkioWeight (10..1000)


@dataclass
class RestartPolicy:
    name: str = "no"  # "no" | "on-failure" | "always" | "unless-stopped"
    maximum_retry_count: int = 0  # on-failure:N (0 = unlimited)


@dataclass
class LogConfig:
    """type "json-file" (max_size bytes, 0 = never rotate; max_file files kept including the live one) or
    "none" (nothing stored; attach still works)."""

    type: str = "json-file"
    max_size: int = 0
    max_file: int = 1


@dataclass
class ContainerSpec:
    """Everything the runtime needs to run a container. The engine builds it from the Docker create request
    and the image config (entrypoint + cmd already combined, image env merged with the request's env)."""

    id: str
    name: str
    layers: list[str]  # unpacked image layer folders, lowest first (the image store's order)
    argv: list[str]  # Entrypoint + Cmd, combined as Docker does
    env: list[str] = field(default_factory=list)  # "KEY=value"; PATH and HOME get Docker's defaults if unset
    workdir: str = ""  # "" = "/"; created in the rootfs if missing, as Docker does
    user: str = ""  # "name", "uid", "name:group", "uid:gid", from the rootfs /etc/passwd, /etc/group
    group_add: list[str] = field(default_factory=list)
    hostname: str = ""  # "" = first 12 chars of the id
    domainname: str = ""
    tty: bool = False
    console_size: list[int] = field(default_factory=list)  # -t: [height, width] set before the process runs
    open_stdin: bool = False
    stdin_once: bool = False  # close the container's stdin when the first attached client closes its stdin
    mounts: list[Mount] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    cap_add: list[str] = field(default_factory=list)  # "NET_ADMIN" or "CAP_NET_ADMIN"; "ALL" allowed
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False  # all capabilities, no masked/read-only paths, rw /sys, no seccomp filter
    devices: list[DeviceMapping] = field(default_factory=list)  # --device
    device_cgroup_rules: list[str] = field(default_factory=list)  # --device-cgroup-rule, "c 1:3 rwm"
    seccomp: str = "default"  # "default" (Docker's profile, seccomp.py) | "unconfined" | a profile's JSON
    readonly_rootfs: bool = False
    network: str = "new"  # "new" (fresh netns, on_netns hook configures it) | "host" | "none" | a netns path
    ipc: str = "private"  # "private" | "host" | a namespace path (/proc/<pid>/ns/ipc)
    pid: str = "private"  # "private" | "host" | a namespace path
    uts: str = "private"  # "private" | "host"
    cgroupns: str = "private"  # "private" (Docker's default on cgroup v2) | "host"
    init: bool = False  # --init: a tiny reaping init is PID 1 and runs argv as its child
    sysctls: dict[str, str] = field(default_factory=dict)
    shm_size: int = 64 * 1024 * 1024
    # container path -> guest file bind-mounted over it (e.g. /etc/resolv.conf, /etc/hosts written by the
    # network code). Any of /etc/hostname, /etc/hosts, /etc/resolv.conf not given here the runtime writes.
    etc_files: dict[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    labels: dict[str, str] = field(default_factory=dict)
    log_config: LogConfig = field(default_factory=LogConfig)
    oom_score_adj: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # engine-owned data stored with the container

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerSpec:
        data = dict(data)
        data["mounts"] = [Mount(**m) for m in data.get("mounts", [])]
        data["devices"] = [DeviceMapping(**d) for d in data.get("devices", [])]
        data["limits"] = Limits(**data.get("limits", {}))
        data["restart_policy"] = RestartPolicy(**data.get("restart_policy", {}))
        data["log_config"] = LogConfig(**data.get("log_config", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ExecSpec:
    """A process to run inside a running container (docker exec)."""

    argv: list[str]
    env: list[str] = field(default_factory=list)  # added to the container's env
    user: str = ""  # "" = the container's user
    workdir: str = ""  # "" = the container's workdir
    tty: bool = False
    console_size: list[int] = field(default_factory=list)  # [height, width] set before the process runs
    stdin: bool = False  # keep a stdin pipe open
    privileged: bool = False
    detach: bool = False  # output is discarded instead of read by the caller


@dataclass
class ContainerState:
    """What a container is doing: the agent's record merged with its supervisor's run record."""

    id: str
    name: str
    status: str  # "created" | "running" | "paused" | "restarting" | "removing" | "exited" | "dead"
    pid: int = 0  # host pid of the container's PID 1 (0 when not running)
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    created: str = ""  # RFC3339Nano
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    restart_count: int = 0
    log_path: str = ""
    upper_dir: str = ""  # the container's writable layer (docker diff / cp read it)
    rootfs: str = ""  # where the rootfs is visible from the guest while running (/proc/<pid>/root)
    spec: ContainerSpec | None = None

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    def to_docker(self) -> dict[str, Any]:
        """Docker's `State` object of GET /containers/{id}/json."""
        return {
            "Status": self.status,
            "Running": self.status in ("running", "paused"),
            "Paused": self.status == "paused",
            "Restarting": self.status == "restarting",
            "OOMKilled": self.oom_killed,
            "Dead": self.status == "dead",
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }


@dataclass
class WaitResult:
    exit_code: int
    error: str = ""
