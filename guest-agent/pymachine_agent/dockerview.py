"""Pure rendering of container records into Docker JSON: inspect, ps summary, status text, filters."""

from __future__ import annotations

import shlex
import time
from datetime import UTC, datetime
from typing import Any

from .runtime.spec import ContainerState

ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(value: str) -> float:
    """RFC3339(Nano) → unix seconds (0 for Docker's zero time or junk)."""
    if not value or value.startswith("0001-"):
        return 0.0
    v = value.rstrip("Z")
    if "." in v:
        head, frac = v.split(".", 1)
        frac = "".join(ch for ch in frac if ch.isdigit())[:6]
        v = f"{head}.{frac}"
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    try:
        return datetime.strptime(v[:26], fmt).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which `docker ps` prints."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


_HEALTH_TEXT = {"starting": " (health: starting)", "healthy": " (healthy)", "unhealthy": " (unhealthy)"}


def status_text(state: ContainerState, now: float | None = None, health: str = "") -> str:
    now = time.time() if now is None else now
    if state.status in ("running", "paused"):
        up = "Up " + human_duration(now - parse_time(state.started_at))
        return up + " (Paused)" if state.status == "paused" else up + _HEALTH_TEXT.get(health, "")
    if state.status == "restarting":
        return f"Restarting ({state.exit_code}) {human_duration(now - parse_time(state.finished_at))} ago"
    if state.status == "exited" or (state.status == "dead"):
        if parse_time(state.finished_at) == 0:
            return "Created" if state.status != "dead" else "Dead"
        return f"Exited ({state.exit_code}) {human_duration(now - parse_time(state.finished_at))} ago"
    if state.status == "removing":
        return "Removal In Progress"
    return "Created"


def docker_of(state: ContainerState) -> dict[str, Any]:
    return ((state.spec.extra if state.spec else {}) or {}).get("docker") or {}


def ports_list(network_settings: dict[str, Any], exposed: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ps `Ports` array: published bindings, plus exposed-only ports without a PublicPort."""
    out: list[dict[str, Any]] = []
    seen = set()
    for key, bindings in (network_settings.get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or []:
            out.append(
                {
                    "IP": b.get("HostIp") or "0.0.0.0",
                    "PrivatePort": int(port),
                    "PublicPort": int(b["HostPort"]),
                    "Type": proto or "tcp",
                }
            )
            seen.add(key)
    for key in exposed or {}:
        if key not in seen:
            port, _, proto = key.partition("/")
            out.append({"PrivatePort": int(port.split("-")[0]), "Type": proto or "tcp"})
    return out


def mounts_view(state: ContainerState) -> list[dict[str, Any]]:
    out = []
    for m in state.spec.mounts if state.spec else []:
        item: dict[str, Any] = {
            "Type": m.type,
            "Source": m.source,
            "Destination": m.target,
            "Mode": "ro" if m.readonly else "",
            "RW": not m.readonly,
            "Propagation": next((o for o in m.options if not o.startswith("x-")), "rprivate")
            if m.type == "bind"
            else "",
        }
        if m.type == "volume":
            # …/volumes/<name>/_data
            item["Name"] = m.source.rstrip("/").split("/")[-2] if m.source else ""
            item["Driver"] = "local"
        out.append(item)
    return out


def command_text(config: dict[str, Any]) -> str:
    argv = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
    return " ".join(shlex.quote(a) if (" " in a or not a) else a for a in argv)


def inspect_view(
    state: ContainerState,
    network_settings: dict[str, Any],
    exec_ids: list[str] | None = None,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    d = docker_of(state)
    config = dict(d.get("Config") or {})
    spec = state.spec
    argv = spec.argv if spec else []
    hc = dict(d.get("HostConfig") or {})
    if spec is not None:
        # `docker update` changes the runtime's spec: report what is in force, not what was asked at create
        lim = spec.limits
        hc.update(
            Memory=lim.memory,
            MemorySwap=lim.memory_swap,
            MemoryReservation=lim.memory_reservation,
            NanoCpus=lim.nano_cpus,
            CpuQuota=lim.cpu_quota,
            CpuPeriod=lim.cpu_period,
            CpuShares=lim.cpu_shares,
            CpusetCpus=lim.cpuset_cpus,
            PidsLimit=lim.pids_limit or None,
            BlkioWeight=lim.io_weight,
            RestartPolicy={
                "Name": spec.restart_policy.name,
                "MaximumRetryCount": spec.restart_policy.maximum_retry_count,
            },
        )
    base = state.log_path.rsplit("/", 1)[0] if state.log_path else ""
    return {
        "Id": state.id,
        "Created": state.created,
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {**state.to_docker(), **({"Health": health} if health else {})},
        "Image": d.get("Image", ""),
        "ResolvConfPath": f"{base}/resolv.conf" if base else "",
        "HostnamePath": f"{base}/hostname" if base else "",
        "HostsPath": f"{base}/hosts" if base else "",
        "LogPath": state.log_path,
        "Name": "/" + state.name,
        "RestartCount": state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids or None,
        "HostConfig": hc,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": ":".join(reversed(spec.layers)) if spec else "",
                "UpperDir": state.upper_dir,
                "MergedDir": state.rootfs,
                "WorkDir": state.upper_dir.rsplit("/", 1)[0] + "/work" if state.upper_dir else "",
            },
        },
        "Mounts": mounts_view(state),
        "Config": config,
        "NetworkSettings": network_settings,
    }


def summary_view(
    state: ContainerState, network_settings: dict[str, Any], image_name: str, health: str = ""
) -> dict[str, Any]:
    d = docker_of(state)
    config = d.get("Config") or {}
    hc = d.get("HostConfig") or {}
    return {
        "Id": state.id,
        "Names": ["/" + state.name],
        "Image": image_name or config.get("Image", ""),
        "ImageID": d.get("Image", ""),
        "Command": command_text(config),
        "Created": int(parse_time(state.created)),
        "Ports": ports_list(network_settings, config.get("ExposedPorts")),
        "Labels": config.get("Labels") or {},
        "State": state.status,
        "Status": status_text(state, health=health),
        "HostConfig": {"NetworkMode": hc.get("NetworkMode", "bridge")},
        "NetworkSettings": {"Networks": network_settings.get("Networks") or {}},
        "Mounts": mounts_view(state),
    }


def empty_network_settings() -> dict[str, Any]:
    return {
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "HairpinMode": False,
        "Ports": {},
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "MacAddress": "",
        "Networks": {},
    }


def container_matches(
    state: ContainerState,
    filters: dict[str, list[str]],
    image_matches: Any,
    networks: list[str],
    health: str = "",
) -> bool:
    """`docker ps --filter`: keys are ANDed, values of one key ORed. `image_matches(ref, state)` is the
    engine's ancestor test (it needs the image store)."""
    d = docker_of(state)
    labels = (d.get("Config") or {}).get("Labels") or {}
    for key, values in filters.items():
        if not values:
            continue
        if key == "id":
            ok = any(state.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(v.lstrip("/") in state.name for v in values)
        elif key == "label":
            ok = all(
                (k in labels and (not eq or labels[k] == val))
                for k, eq, val in (v.partition("=") for v in values)
            )
        elif key == "status":
            ok = state.status in values
        elif key == "exited":
            ok = state.status == "exited" and str(state.exit_code) in values
        elif key == "ancestor":
            ok = any(image_matches(v, state) for v in values)
        elif key == "network":
            ok = any(v in networks for v in values)
        elif key == "volume":
            ok = any(
                v == m.target or m.source.rstrip("/").endswith(f"/{v}/_data")
                for v in values
                for m in (state.spec.mounts if state.spec else [])
            )
        elif key == "health":
            ok = (health or "none") in values
        elif key == "is-task":
            ok = "false" in [v.lower() for v in values]
        else:
            ok = True
        if not ok:
            return False
    return True
