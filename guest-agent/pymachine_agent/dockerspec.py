"""Pure translation between Docker's container JSON and the runtime/network specs (no I/O here).

`translate_create` turns a `POST /containers/create` body plus the image config into the runtime's
`ContainerSpec` and the network's `EndpointConfig`; the normalised Docker `Config`/`HostConfig` are kept in
`spec.extra["docker"]` so `inspect` can answer in Docker's shape after an agent restart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import health, links
from .errors import BadParameter
from .network.model import EndpointConfig, EndpointSettings, InvalidParameterError, PortSpec
from .network.ports import parse_host_ip
from .runtime import seccomp, sysctls
from .runtime.devices import parse_rule
from .runtime.spec import ContainerSpec, DeviceMapping, Limits, LogConfig, Mount, RestartPolicy

ZERO_TIME = "0001-01-01T00:00:00Z"
_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.I)


@dataclass
class CreatePlan:
    """What `translate_create` decided: the specs plus the volumes the engine must make exist."""

    spec: ContainerSpec
    endpoint: EndpointConfig
    named_volumes: list[str] = field(default_factory=list)  # named volumes referenced (create if missing)
    anonymous_targets: list[str] = field(default_factory=list)  # paths that need a fresh anonymous volume
    warnings: list[str] = field(default_factory=list)


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def parse_size(value: str | int) -> int:
    """ "64m", "1g", "512k", "1024" → bytes (Docker's RAMInBytes)."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise BadParameter(f"invalid size: '{value}'")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def seccomp_mode(security_opt: list[str] | None) -> str:
    """HostConfig.SecurityOpt → the runtime's `seccomp` ("default" | "unconfined" | a profile's JSON), as
    dockerd parses it.

    Accepts `seccomp=unconfined` and the old `seccomp:unconfined`; `no-new-privileges[=bool]` is accepted
    because the runtime always sets no_new_privs; `apparmor=`/`label=`/`systempaths=unconfined` are accepted
    and ignored, as dockerd does on a host without AppArmor/SELinux. A custom seccomp profile (the JSON the
    CLI sends for `seccomp=<file>`) is compiled here once, so that a malformed one is a 400 at create.
    """
    mode = "default"
    for opt in security_opt or []:
        if opt == "no-new-privileges":
            continue
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        if not sep:
            raise BadParameter(f'invalid --security-opt 1: "{opt}"')
        if key == "seccomp":
            if value == "unconfined":
                mode = "unconfined"
            elif value in ("builtin", "default"):
                mode = "default"
            else:
                mode = _seccomp_profile(value)
        elif key == "no-new-privileges":
            if value.lower() not in ("true", "false", "1", "0", ""):
                raise BadParameter(f"invalid --security-opt 2: {opt!r}")
        elif key not in ("apparmor", "label", "systempaths"):
            raise BadParameter(f'invalid --security-opt 2: "{opt}"')
    return mode


def _seccomp_profile(value: str) -> str:
    if not value.lstrip().startswith("{"):
        raise BadParameter(
            f"invalid seccomp profile {value[:64]!r}: send the profile's JSON (the docker CLI reads the file "
            "for --security-opt seccomp=FILE), or seccomp=unconfined"
        )
    try:
        profile = json.dumps(seccomp.parse(value), separators=(",", ":"))
        seccomp.check(profile)
    except (ValueError, RecursionError) as e:  # ProfileError is a ValueError
        raise BadParameter(f"invalid seccomp profile: {e}") from None
    return profile


def combine_command(
    image_entrypoint: list[str] | None,
    image_cmd: list[str] | None,
    entrypoint: Any,
    cmd: Any,
) -> tuple[list[str], list[str]]:
    """Docker's Entrypoint + Cmd rule; returns (entrypoint, cmd) as stored in Config.

    An Entrypoint in the request replaces the image's and drops the image's Cmd; `--entrypoint ""` (sent
    as [""] or "") clears it. A Cmd in the request replaces the image's Cmd.
    """
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint] if entrypoint else [""]
    if isinstance(cmd, str):
        cmd = ["/bin/sh", "-c", cmd]
    if entrypoint is not None:
        ep = [] if entrypoint in ([], [""]) else list(entrypoint)
        return ep, list(cmd or [])
    return list(image_entrypoint or []), list(cmd) if cmd else list(image_cmd or [])


def merge_env(image_env: list[str] | None, env: list[str] | None) -> list[str]:
    """Image env first, request entries override by key. A bare `KEY` entry (the client had no value to
    send) is kept in Config.Env as given, as dockerd keeps it; at start it unsets KEY (process.build_env)."""
    out: dict[str, str] = {}
    for item in [*(image_env or []), *(env or [])]:
        out[item.partition("=")[0]] = item
    return list(out.values())


# dockerd's built-in log drivers; ours store json-file ("local" is dockerd's compact variant of it) or nothing
_SERVED_LOG_DRIVERS = {"": "json-file", "json-file": "json-file", "local": "json-file", "none": "none"}
_DOCKERD_LOG_DRIVERS = {
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
}


def log_driver(name: str) -> str:
    """`HostConfig.LogConfig.Type` → the runtime's log storage; refused at create as dockerd refuses it."""
    if name in _SERVED_LOG_DRIVERS:
        return _SERVED_LOG_DRIVERS[name]
    if name in _DOCKERD_LOG_DRIVERS:
        raise BadParameter(
            f"log driver {name!r} is not supported by pymachine's engine (json-file, local, none)"
        )
    raise BadParameter(f"logger: no log driver named '{name}' is registered")


def parse_port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    try:
        number = int(port.split("-")[0])
    except ValueError:
        raise BadParameter(f'invalid port specification: "{key}"') from None
    if not 0 < number < 65536:
        raise BadParameter(f'invalid port specification: "{key}"')
    return number, (proto or "tcp").lower()


def port_specs(bindings: dict[str, Any] | None) -> list[PortSpec]:
    """HostConfig.PortBindings → PortSpec list (HostPort "" means an ephemeral port). HostIp must be an IP
    literal or empty: a name (`localhost`, `0`) would be resolved by the host agent's bind."""
    out: list[PortSpec] = []
    for key, entries in (bindings or {}).items():
        cport, proto = parse_port_key(key)
        for entry in entries or [{}]:
            hp = str((entry or {}).get("HostPort") or "0").split("-")[0]
            try:
                host_port = int(hp)
            except ValueError:
                raise BadParameter(f'invalid port specification: "{hp}"') from None
            if not 0 <= host_port < 65536:
                raise BadParameter(f'invalid port specification: "{hp}"')
            try:
                host_ip = parse_host_ip(str((entry or {}).get("HostIp") or ""))
            except InvalidParameterError as exc:
                raise BadParameter(f"port binding {key}: {exc.message}") from None
            out.append(PortSpec(cport, proto, host_port, host_ip))
    return out


def parse_bind(bind: str) -> tuple[str, str, bool, list[str]]:
    """ "src:dst[:opts]" → (source, target, readonly, options)."""
    parts = bind.split(":")
    if len(parts) < 2:
        raise BadParameter(f"invalid volume specification: '{bind}'")
    if len(parts) == 2:
        src, dst, opts = parts[0], parts[1], ""
    else:
        src, dst, opts = parts[0], parts[1], ":".join(parts[2:])
    if not dst.startswith("/"):
        raise BadParameter(
            f"invalid volume specification: '{bind}': invalid mount config: mount path must be absolute"
        )
    readonly = False
    options: list[str] = []
    for opt in filter(None, opts.split(",")):
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            options.append(opt)
        elif opt in ("z", "Z", "nocopy", "consistent", "cached", "delegated"):
            continue
        else:
            raise BadParameter(f"invalid mode: {opt}")
    return src, dst, readonly, options


def device_mappings(hc: dict[str, Any]) -> tuple[list[DeviceMapping], list[str]]:
    """HostConfig.Devices (--device) and DeviceCgroupRules (--device-cgroup-rule), checked as dockerd does;
    the guest nodes themselves are looked up at start."""
    devices = []
    for d in hc.get("Devices") or []:
        host, inside = d.get("PathOnHost") or "", d.get("PathInContainer") or d.get("PathOnHost") or ""
        perms = d.get("CgroupPermissions") or "rwm"
        if not host.startswith("/") or not inside.startswith("/"):
            raise BadParameter(f"bad format for path: {host}:{inside}")
        if any(c not in "rwm" for c in perms):
            raise BadParameter(f"invalid device mode: {perms}")
        devices.append(DeviceMapping(host, inside, perms))
    rules = list(hc.get("DeviceCgroupRules") or [])
    for rule in rules:
        try:
            parse_rule(rule)
        except ValueError as e:
            raise BadParameter(str(e)) from e
    return devices, rules


def _tmpfs_options(opts: str) -> list[str]:
    return [o for o in opts.split(",") if o]


def translate_create(
    cid: str,
    name: str,
    body: dict[str, Any],
    image: dict[str, Any],
    layers: list[str],
    volume_path: Callable[[str], str],
    host_name: str = "",
) -> CreatePlan:
    """The create body + image (its `Id` and OCI `config`) → CreatePlan. `volume_path(name)` maps a named
    volume to its folder. Raises BadParameter (400) for malformed requests."""
    hc = copy.deepcopy(body.get("HostConfig") or {})
    icfg = image.get("config") or {}
    warnings: list[str] = []

    entrypoint, cmd = combine_command(
        icfg.get("Entrypoint"), icfg.get("Cmd"), body.get("Entrypoint"), body.get("Cmd")
    )
    argv = entrypoint + cmd
    if not argv:
        raise BadParameter("no command specified")
    env = merge_env(icfg.get("Env"), body.get("Env"))
    labels = {**(icfg.get("Labels") or {}), **(body.get("Labels") or {})}
    exposed = {**(icfg.get("ExposedPorts") or {}), **(body.get("ExposedPorts") or {})}
    for key in hc.get("PortBindings") or {}:
        exposed.setdefault(key, {})
    volumes = {**(icfg.get("Volumes") or {}), **(body.get("Volumes") or {})}

    # -- mounts ------------------------------------------------------------------------------------
    mounts: list[Mount] = []
    named: list[str] = []
    for bind in hc.get("Binds") or []:
        src, dst, ro, opts = parse_bind(bind)
        if src.startswith("/"):
            mounts.append(Mount("bind", dst, src, ro, opts))
        else:
            named.append(src)
            mounts.append(Mount("volume", dst, volume_path(src), ro, opts))
    for m in hc.get("Mounts") or []:
        kind = (m.get("Type") or "volume").lower()
        target = m.get("Target") or ""
        if not target.startswith("/"):
            raise BadParameter("invalid mount config: mount path must be absolute")
        ro = bool(m.get("ReadOnly"))
        if kind == "bind":
            prop = ((m.get("BindOptions") or {}).get("Propagation")) or ""
            mounts.append(Mount("bind", target, m.get("Source") or "", ro, [prop] if prop else []))
        elif kind == "volume":
            src = m.get("Source") or ""
            if src:
                named.append(src)
                mounts.append(Mount("volume", target, volume_path(src), ro, []))
            else:
                volumes.setdefault(target, {})
        elif kind == "tmpfs":
            topts = m.get("TmpfsOptions") or {}
            opts = []
            if topts.get("SizeBytes"):
                opts.append(f"size={int(topts['SizeBytes'])}")
            if topts.get("Mode"):
                opts.append(f"mode={int(topts['Mode']):o}")
            mounts.append(Mount("tmpfs", target, "", ro, opts))
        else:
            raise BadParameter(f"mount type unknown: {kind!r}")
    for target, opts in (hc.get("Tmpfs") or {}).items():
        mounts.append(Mount("tmpfs", target, "", False, _tmpfs_options(opts or "")))
    covered = {m.target.rstrip("/") or "/" for m in mounts}
    anonymous = [t for t in volumes if (t.rstrip("/") or "/") not in covered]

    # -- resources ---------------------------------------------------------------------------------
    nano = int(hc.get("NanoCpus") or 0)
    if nano and (hc.get("CpuQuota") or hc.get("CpuPeriod")):
        raise BadParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    memory = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if memory and 0 < swap < memory:
        raise BadParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    if memory and memory < 6 * 1024 * 1024:
        raise BadParameter("Minimum memory limit allowed is 6MB")
    limits = Limits(
        memory=memory,
        memory_swap=swap,
        memory_reservation=int(hc.get("MemoryReservation") or 0),
        nano_cpus=nano,
        cpu_quota=int(hc.get("CpuQuota") or 0),
        cpu_period=int(hc.get("CpuPeriod") or 0),
        cpu_shares=int(hc.get("CpuShares") or 0),
        cpuset_cpus=hc.get("CpusetCpus") or "",
        pids_limit=int(hc.get("PidsLimit") or 0),
        io_weight=int(hc.get("BlkioWeight") or 0),
    )

    rp = hc.get("RestartPolicy") or {}
    rp_name = rp.get("Name") or "no"
    if rp_name not in ("no", "always", "on-failure", "unless-stopped"):
        raise BadParameter(f"invalid restart policy: unknown policy '{rp_name}'")
    if hc.get("AutoRemove") and rp_name != "no":
        raise BadParameter("conflicting options: cannot specify both --restart and --rm")
    if hc.get("Runtime") not in (None, "", "runc"):
        raise BadParameter(f"unknown or invalid runtime name: {hc['Runtime']}")
    lc = hc.get("LogConfig") or {}
    lcc = lc.get("Config") or {}
    log_config = LogConfig(
        type=log_driver(lc.get("Type") or ""),
        max_size=parse_size(lcc["max-size"]) if lcc.get("max-size") else 0,
        max_file=int(lcc.get("max-file") or 1),
    )

    # -- networking --------------------------------------------------------------------------------
    mode = hc.get("NetworkMode") or "default"
    if mode == "default":
        mode = "bridge"
    if body.get("NetworkDisabled"):
        mode = "none"
    endpoints: dict[str, EndpointSettings] = {}
    link_list: list[links.Link] = []
    for net, ep in ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).items():
        ep = ep or {}
        key = mode if net == "default" else net
        endpoints[key] = EndpointSettings(
            aliases=list(ep.get("Aliases") or []),
            ipv4_address=((ep.get("IPAMConfig") or {}).get("IPv4Address")) or "",
            ipv6_address=((ep.get("IPAMConfig") or {}).get("IPv6Address")) or "",
        )
        link_list += [_link(e, "" if key == "bridge" else key) for e in ep.get("Links") or []]
    legacy_net = "" if mode == "bridge" else mode  # HostConfig.Links on a user network: names there
    link_list += [_link(e, legacy_net) for e in hc.get("Links") or []]
    link_list = list(dict.fromkeys(link_list))  # the CLI sends a user network's links in both places
    if link_list and (mode == "host" or mode.startswith("container:")):
        kind = mode.split(":")[0]
        raise BadParameter(f"conflicting options: {kind} type networking can't be used with links")
    if hc.get("Links"):
        hc["Links"] = [lk.to_docker(name) for lk in link_list if lk.network == legacy_net]
    hostname = body.get("Hostname") or ""
    if mode == "host":
        runtime_net = "host"
    elif mode == "none":
        runtime_net = "new"  # a fresh netns all the same: the network's attach brings `lo` up in it
    elif mode.startswith("container:"):
        runtime_net = mode  # the engine swaps this for the other container's netns path
    else:
        runtime_net = "new"
    if not hostname:
        # Docker: a container on the host's network gets the host's name, others their short id
        hostname = host_name if mode == "host" and host_name else cid[:12]
    endpoint = EndpointConfig(
        name=name,
        hostname=hostname,
        domainname=body.get("Domainname") or "",
        network_mode=mode,
        networks=endpoints,
        ports=port_specs(hc.get("PortBindings")),
        publish_all=bool(hc.get("PublishAllPorts")),
        exposed=list(exposed),
        dns=list(hc.get("Dns") or []),
        dns_search=list(hc.get("DnsSearch") or []),
        dns_options=list(hc.get("DnsOptions") or []),
        extra_hosts=list(hc.get("ExtraHosts") or []),
        mac_address=body.get("MacAddress") or "",
    )

    stop_signal = body.get("StopSignal") or icfg.get("StopSignal") or "SIGTERM"
    stop_timeout = body.get("StopTimeout")
    config = {
        "Hostname": hostname,
        "Domainname": body.get("Domainname") or "",
        "User": body.get("User") or icfg.get("User") or "",
        "AttachStdin": bool(body.get("AttachStdin")),
        "AttachStdout": bool(body.get("AttachStdout")),
        "AttachStderr": bool(body.get("AttachStderr")),
        "ExposedPorts": exposed or None,
        "Tty": bool(body.get("Tty")),
        "OpenStdin": bool(body.get("OpenStdin")),
        "StdinOnce": bool(body.get("StdinOnce")),
        "Env": env,
        "Cmd": cmd or None,
        "Image": body.get("Image") or "",
        "Volumes": volumes or None,
        "WorkingDir": body.get("WorkingDir") or icfg.get("WorkingDir") or "",
        "Entrypoint": entrypoint or None,
        "OnBuild": None,
        "Labels": labels,
        "StopSignal": stop_signal,
    }
    check = health.merge(body.get("Healthcheck"), icfg.get("Healthcheck"))
    try:
        health.validate(check)
    except health.HealthcheckInvalid as exc:
        raise BadParameter(str(exc)) from None
    if check:
        config["Healthcheck"] = check
    if body.get("Shell") or icfg.get("Shell"):
        config["Shell"] = body.get("Shell") or icfg.get("Shell")
    if stop_timeout is not None:
        config["StopTimeout"] = stop_timeout
    host_config = fill_host_config(hc, mode)
    devices, device_rules = device_mappings(hc)

    spec = ContainerSpec(
        id=cid,
        name=name,
        layers=list(layers),
        argv=argv,
        env=env,
        workdir=config["WorkingDir"],
        user=config["User"],
        group_add=list(hc.get("GroupAdd") or []),
        hostname=hostname,
        domainname=config["Domainname"],
        tty=config["Tty"],
        console_size=[int(n) for n in (hc.get("ConsoleSize") or [])[:2]],
        open_stdin=config["OpenStdin"],
        stdin_once=config["StdinOnce"],
        mounts=mounts,
        limits=limits,
        devices=devices,
        device_cgroup_rules=device_rules,
        cap_add=list(hc.get("CapAdd") or []),
        cap_drop=list(hc.get("CapDrop") or []),
        privileged=bool(hc.get("Privileged")),
        seccomp=seccomp_mode(hc.get("SecurityOpt")),
        readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        network=runtime_net,
        ipc="host" if hc.get("IpcMode") == "host" else "private",
        pid="host" if hc.get("PidMode") == "host" else "private",
        uts="host" if hc.get("UTSMode") == "host" else "private",
        cgroupns="host" if hc.get("CgroupnsMode") == "host" else "private",
        init=bool(hc.get("Init")),
        sysctls=_sysctls(hc, mode),
        shm_size=int(hc.get("ShmSize") or 64 * 1024 * 1024),
        stop_signal=stop_signal,
        stop_timeout=int(stop_timeout) if stop_timeout is not None else 10,
        restart_policy=RestartPolicy(rp_name, int(rp.get("MaximumRetryCount") or 0)),
        labels=labels,
        log_config=log_config,
        oom_score_adj=int(hc.get("OomScoreAdj") or 0),
        extra={
            "docker": {
                "Config": config,
                "HostConfig": host_config,
                "Image": image.get("Id", ""),
                "NetworkingConfig": body.get("NetworkingConfig") or None,
            },
            "links": [dataclasses.asdict(lk) for lk in link_list],
        },
    )
    return CreatePlan(spec, endpoint, named, anonymous, warnings)


def _link(entry: str, network: str) -> links.Link:
    try:
        return links.parse(entry, network)
    except links.LinkError as exc:
        raise BadParameter(str(exc)) from None


def _sysctls(hc: dict[str, Any], network_mode: str) -> dict[str, str]:
    """HostConfig.Sysctls; 400 naming the key unless it is namespaced, in a namespace the container owns."""
    raw = hc.get("Sysctls") or {}
    if not isinstance(raw, dict):
        raise BadParameter("HostConfig.Sysctls must be an object of name: value")
    values = {str(k): str(v) for k, v in raw.items()}
    ipc = hc.get("IpcMode") or ""
    private_net = network_mode != "host" and not network_mode.startswith("container:")
    try:
        sysctls.check(values, private_net, private_ipc=ipc != "host" and not ipc.startswith("container:"))
    except sysctls.SysctlError as exc:
        raise BadParameter(str(exc)) from None
    return values


def fill_host_config(hc: dict[str, Any], mode: str) -> dict[str, Any]:
    """HostConfig with the defaults clients read (docker-py needs LogConfig.Type == "json-file")."""
    out = dict(hc)
    out["NetworkMode"] = mode
    lc = hc.get("LogConfig") or {}
    out["LogConfig"] = {"Type": lc.get("Type") or "json-file", "Config": dict(lc.get("Config") or {})}
    out.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
    if not (out["RestartPolicy"] or {}).get("Name"):
        out["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    defaults: dict[str, Any] = {
        "Binds": None,
        "PortBindings": {},
        "AutoRemove": False,
        "Privileged": False,
        "PublishAllPorts": False,
        "ReadonlyRootfs": False,
        "CapAdd": None,
        "CapDrop": None,
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": None,
        "Memory": 0,
        "MemorySwap": 0,
        "NanoCpus": 0,
        "CpuShares": 0,
        "CpuQuota": 0,
        "CpuPeriod": 0,
        "PidsLimit": None,
        "ShmSize": 64 * 1024 * 1024,
        "Tmpfs": None,
        "Mounts": None,
        "CgroupnsMode": "private",
        "IpcMode": "private",
        "Isolation": "",
        "ConsoleSize": [0, 0],
        "Devices": [],
    }
    for key, value in defaults.items():
        if out.get(key) is None or (key == "ShmSize" and not out.get(key)):
            out[key] = value
    out["Runtime"] = out.get("Runtime") or "runc"
    if out.get("PortBindings") is None:
        out["PortBindings"] = {}
    return out
