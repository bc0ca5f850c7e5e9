"""The JSON shapes of Docker's request bodies, and one checker for them.

dockerd decodes bodies into Go structs, so `{"Image": 5}` is a 400 naming the field before any handler
runs. Our handlers read plain dicts; without this check a wrong type surfaces as an AttributeError or a
TypeError deep inside the engine, a 500. The schemas follow moby's api/types (field names and Go types)
for the fields the engine reads; unknown fields pass, as in Go, and `null` is accepted where Go would
leave the zero value. Only types are checked here: values (an IP, a port range) are for the code that
understands them.

A schema is one of: a Python type (str, bool, int, dict = any object), `ANY`, `STRSLICE` (Docker's
"string or list of strings"), `ListOf(schema)`, `MapOf(schema)` (string keys), `Obj({field: schema})`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANY = object()
STRSLICE = object()


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Any]


class BodyError(ValueError):
    """A field of the body has the wrong JSON type; the message names the field."""


_JSON_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _fail(where: str, expected: str, value: Any) -> BodyError:
    shown = repr(value) if not isinstance(value, (dict, list)) else _kind(value)
    return BodyError(f"invalid request body: {where or 'the body'} must be {expected}, not {shown[:60]}")


def check(value: Any, schema: Any, where: str = "") -> None:
    """Raise BodyError when `value` does not have the JSON types `schema` describes."""
    if schema is ANY or (value is None and where):
        return
    if schema is STRSLICE:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return
        raise _fail(where, "a string or an array of strings", value)
    if isinstance(schema, Obj):
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        for name, sub in schema.fields.items():
            if name in value:
                check(value[name], sub, f"{where}.{name}" if where else name)
        return
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise _fail(where, "an array", value)
        for i, item in enumerate(value):
            if item is None:  # Go would make a zero value; the engine's loops expect real items
                raise _fail(f"{where}[{i}]", "a value", item)
            check(item, schema.item, f"{where}[{i}]")
        return
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        for key, item in value.items():
            if item is None and schema.value in (str, int, bool):  # a null label value would crash the engine
                raise _fail(f"{where}[{key!r}]", "a value", item)
            check(item, schema.value, f"{where}[{key!r}]")
        return
    ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
    if not ok:
        raise _fail(where, _JSON_NAMES.get(schema, schema.__name__), value)


STRS = ListOf(str)
LABELS = MapOf(str)
SET = MapOf(dict)  # Go's map[string]struct{}: ExposedPorts, Volumes

RESOURCES = {
    "Memory": int,
    "MemorySwap": int,
    "MemoryReservation": int,
    "NanoCpus": int,
    "CpuQuota": int,
    "CpuPeriod": int,
    "CpuShares": int,
    "CpusetCpus": str,
    "CpusetMems": str,
    "PidsLimit": int,
    "BlkioWeight": int,
    "OomKillDisable": bool,
    "Devices": ListOf(Obj({"PathOnHost": str, "PathInContainer": str, "CgroupPermissions": str})),
    "DeviceCgroupRules": STRS,
    "Ulimits": ListOf(Obj({"Name": str, "Soft": int, "Hard": int})),
}
RESTART_POLICY = Obj({"Name": str, "MaximumRetryCount": int})
ENDPOINT = Obj(
    {
        "Aliases": STRS,
        "Links": STRS,
        "IPAMConfig": Obj({"IPv4Address": str, "IPv6Address": str, "LinkLocalIPs": STRS}),
        "MacAddress": str,
        "DriverOpts": LABELS,
    }
)
HOST_CONFIG = Obj(
    {
        **RESOURCES,
        "Binds": STRS,
        "PortBindings": MapOf(ListOf(Obj({"HostIp": str, "HostPort": str}))),
        "PublishAllPorts": bool,
        "Mounts": ListOf(
            Obj(
                {
                    "Type": str,
                    "Source": str,
                    "Target": str,
                    "ReadOnly": bool,
                    "BindOptions": Obj({"Propagation": str}),
                    "VolumeOptions": Obj({"NoCopy": bool, "Labels": LABELS}),
                    "TmpfsOptions": Obj({"SizeBytes": int, "Mode": int}),
                }
            )
        ),
        "Tmpfs": LABELS,
        "VolumesFrom": STRS,
        "RestartPolicy": RESTART_POLICY,
        "AutoRemove": bool,
        "LogConfig": Obj({"Type": str, "Config": LABELS}),
        "NetworkMode": str,
        "Dns": STRS,
        "DnsSearch": STRS,
        "DnsOptions": STRS,
        "ExtraHosts": STRS,
        "GroupAdd": STRS,
        "CapAdd": STRSLICE,
        "CapDrop": STRSLICE,
        "Privileged": bool,
        "SecurityOpt": STRS,
        "ReadonlyRootfs": bool,
        "IpcMode": str,
        "PidMode": str,
        "UTSMode": str,
        "UsernsMode": str,
        "CgroupnsMode": str,
        "Init": bool,
        "Sysctls": LABELS,
        "ShmSize": int,
        "OomScoreAdj": int,
        "Links": STRS,
        "ConsoleSize": ListOf(int),
    }
)
CONTAINER_CONFIG = {
    "Hostname": str,
    "Domainname": str,
    "User": str,
    "AttachStdin": bool,
    "AttachStdout": bool,
    "AttachStderr": bool,
    "ExposedPorts": SET,
    "Tty": bool,
    "OpenStdin": bool,
    "StdinOnce": bool,
    "Env": STRS,
    "Cmd": STRSLICE,
    "Image": str,
    "Volumes": SET,
    "WorkingDir": str,
    "Entrypoint": STRSLICE,
    "NetworkDisabled": bool,
    "MacAddress": str,
    "OnBuild": STRS,
    "Labels": LABELS,
    "StopSignal": str,
    "StopTimeout": int,
    "Shell": STRSLICE,
    "Healthcheck": Obj(
        {
            "Test": STRS,
            "Interval": int,
            "Timeout": int,
            "StartPeriod": int,
            "StartInterval": int,
            "Retries": int,
        }
    ),
}

# -- one schema per JSON endpoint ------------------------------------------------------------------------

CONTAINER_CREATE = Obj(
    {
        **CONTAINER_CONFIG,
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": Obj({"EndpointsConfig": MapOf(ENDPOINT)}),
    }
)
CONTAINER_UPDATE = Obj({**RESOURCES, "RestartPolicy": RESTART_POLICY})
COMMIT_CONFIG = Obj(CONTAINER_CONFIG)
EXEC_CREATE = Obj(
    {
        "AttachStdin": bool,
        "AttachStdout": bool,
        "AttachStderr": bool,
        "Tty": bool,
        "Detach": bool,
        "DetachKeys": str,
        "Env": STRS,
        "Cmd": STRS,
        "User": str,
        "WorkingDir": str,
        "Privileged": bool,
        "ConsoleSize": ListOf(int),
    }
)
EXEC_START = Obj({"Detach": bool, "Tty": bool, "ConsoleSize": ListOf(int)})
NETWORK_CREATE = Obj(
    {
        "Name": str,
        "Driver": str,
        "Internal": bool,
        "Attachable": bool,
        "Ingress": bool,
        "EnableIPv6": bool,
        "CheckDuplicate": bool,
        "Labels": LABELS,
        "Options": LABELS,
        "IPAM": Obj(
            {
                "Driver": str,
                "Options": LABELS,
                "Config": ListOf(
                    Obj({"Subnet": str, "IPRange": str, "Gateway": str, "AuxiliaryAddresses": LABELS})
                ),
            }
        ),
    }
)
NETWORK_CONNECT = Obj({"Container": str, "EndpointConfig": ENDPOINT})
NETWORK_DISCONNECT = Obj({"Container": str, "Force": bool})
VOLUME_CREATE = Obj({"Name": str, "Driver": str, "DriverOpts": LABELS, "Labels": LABELS})
AUTH = Obj(
    {
        "username": str,
        "password": str,
        "email": str,
        "serveraddress": str,
        "auth": str,
        "identitytoken": str,
        "registrytoken": str,
    }
)
