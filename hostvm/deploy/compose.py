"""The compose file of a pushed tree, read into a plan `release.py` builds and runs: the subset of the Compose
specification an app release needs (docs/deploy.md, "Compose apps"), everything else refused by name.

Pure: text in, typed values out. Parsed with PyYAML's safe loader (plain data only: no Python tags, no
object construction from a pushed file). Supported per service: build (a context path, or context,
dockerfile, args), image, environment, ports, depends_on, command. Top level: services, plus name and version
(ignored). `x-` extension keys are ignored, as Compose does. Anything else (volumes, networks, healthcheck,
restart, ...) is refused with the key's name, so a push never runs something other than what the file says.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..errors import PymachineError

# Compose's own lookup order at the top of the tree.
FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
SERVICE_KEYS = ("build", "image", "environment", "ports", "depends_on", "command")
TOP_KEYS = ("services", "name", "version")
BUILD_KEYS = ("context", "dockerfile", "args")
# Lower case: the service names an image repository (app-NAME-SERVICE) and a container.
SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,30}")
PORT_RE = re.compile(r"(?:(?:\[?[0-9a-fA-F.:]*\]?):)?(?:(\d+):)?(\d+)(?:/tcp)?")
MAX_BYTES = 256 * 1024


class ComposeError(PymachineError):
    pass


@dataclass(frozen=True)
class Build:
    context: str  # a path inside the pushed tree, "" for its top
    dockerfile: str = ""  # relative to the context; "" = Dockerfile
    args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str
    build: Build | None
    image: str  # "" when built
    environment: dict[str, str]
    command: list[str] | None
    port: int | None  # the container port of its first `ports:` entry


@dataclass(frozen=True)
class Plan:
    file: str
    services: tuple[Service, ...]  # in start order (depends_on first)
    routed: str  # the service the app's port is routed to

    @property
    def routed_service(self) -> Service:
        return next(s for s in self.services if s.name == self.routed)


def parse(text: str, file: str, routed: str = "") -> Plan:
    """The plan of compose file `file` (its path in the tree, for messages and relative contexts); `routed`
    is the app's service setting ("" = the first service with `ports:`)."""
    if len(text.encode()) > MAX_BYTES:
        raise ComposeError(f"{file}: larger than {MAX_BYTES // 1024} KiB; is it really a compose file?")
    import yaml  # here: `app --help` and `app list` need no YAML parser

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ComposeError(f"{file}: the top level must be a mapping with 'services:'")
    _only(data, TOP_KEYS, file, "the top level")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError(f"{file}: 'services' must be a mapping of one or more services")
    base = posixpath.dirname(file)
    parsed = [_service(str(name), spec, file, base) for name, spec in services.items()]
    deps = {str(name): _depends_on(str(name), spec, file, services) for name, spec in services.items()}
    ordered = _order(parsed, deps, file)
    return Plan(file, ordered, _routed(parsed, routed, file))


def _only(mapping: dict[Any, Any], allowed: tuple[str, ...], file: str, where: str) -> None:
    for key in mapping:
        if isinstance(key, str) and key.startswith("x-"):
            continue  # Compose's extension fields: ignored there too
        if key not in allowed:
            raise ComposeError(
                f"{file}: {where}: '{key}' is not supported by pymachine app",
                hint=f"supported there: {', '.join(allowed)} (docs/deploy.md, Compose apps)",
            )


def _service(name: str, spec: Any, file: str, base: str) -> Service:
    where = f"service '{name}'"
    if not SERVICE_RE.fullmatch(name):
        raise ComposeError(
            f"{file}: service name {name!r} is not supported",
            hint="use lower-case letters, digits, '_', '.' and '-' (it names an image and a container)",
        )
    if not isinstance(spec, dict):
        raise ComposeError(f"{file}: {where} must be a mapping")
    _only(spec, SERVICE_KEYS, file, where)
    build = _build(spec["build"], file, where, base) if "build" in spec else None
    image = spec.get("image") or ""
    if not isinstance(image, str):
        raise ComposeError(f"{file}: {where}: 'image' must be a string")
    if build is None and not image:
        raise ComposeError(f"{file}: {where} has neither 'build' nor 'image'")
    return Service(
        name=name,
        build=build,
        image="" if build else image,  # with both, Compose tags the build as `image`; here the app's tag
        environment=_pairs(spec.get("environment"), file, f"{where}: 'environment'"),
        command=_command(spec.get("command"), file, where),
        port=_port(spec.get("ports"), file, where),
    )


def _build(spec: Any, file: str, where: str, base: str) -> Build:
    if isinstance(spec, str):
        spec = {"context": spec}
    if not isinstance(spec, dict):
        raise ComposeError(f"{file}: {where}: 'build' must be a path or a mapping")
    _only(spec, BUILD_KEYS, file, f"{where}: build")
    context = _inside(str(spec.get("context") or "."), base, file, f"{where}: build context")
    dockerfile = str(spec.get("dockerfile") or "")
    if dockerfile:
        _inside(dockerfile, context, file, f"{where}: build dockerfile")  # inside the context, as docker
    return Build(context, dockerfile, _pairs(spec.get("args"), file, f"{where}: build args"))


def _inside(path: str, base: str, file: str, what: str) -> str:
    """`path` (relative to `base`) as a path in the pushed tree; "" for its top. Absolute paths, URLs and
    paths that leave the tree are refused: the build context is the pushed commit, nothing else."""
    if path.startswith("/") or "://" in path or path.startswith("git@"):
        raise ComposeError(f"{file}: {what} {path!r} must be a relative path inside the pushed tree")
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined == ".":
        return ""
    if joined == ".." or joined.startswith("../"):
        raise ComposeError(f"{file}: {what} {path!r} leaves the pushed tree")
    return joined


def _pairs(spec: Any, file: str, what: str) -> dict[str, str]:
    """`environment:`/`args:` as a mapping or a list of KEY=VALUE."""
    if spec is None:
        return {}
    out: dict[str, str] = {}
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, list):
        items = []
        for entry in spec:
            key, eq, value = str(entry).partition("=")
            items.append((key, value if eq else None))
    else:
        raise ComposeError(f"{file}: {what} must be a mapping or a list of KEY=VALUE")
    for key, value in items:
        if value is None:
            raise ComposeError(
                f"{file}: {what}: {key} has no value",
                hint="write KEY=VALUE (a value from the pusher's shell is not passed to the machine)",
            )
        if isinstance(value, (dict, list)):
            raise ComposeError(f"{file}: {what}: {key} must be a plain value")
        out[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _command(spec: Any, file: str, where: str) -> list[str] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return shlex.split(spec)
    if isinstance(spec, list) and all(isinstance(a, (str, int, float)) for a in spec):
        return [str(a) for a in spec]
    raise ComposeError(f"{file}: {where}: 'command' must be a string or a list of strings")


def _port(spec: Any, file: str, where: str) -> int | None:
    """The container port of the first `ports:` entry (short syntax: 80, "8080:80", "127.0.0.1:8080:80",
    "80/tcp"). The app's router publishes the app's port instead, so host ports are not used."""
    if spec is None:
        return None
    if not isinstance(spec, list) or not spec:
        raise ComposeError(f"{file}: {where}: 'ports' must be a list")
    ports = []
    for entry in spec:
        match = PORT_RE.fullmatch(str(entry)) if isinstance(entry, (str, int)) else None
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ComposeError(
                f"{file}: {where}: port {entry!r} is not supported",
                hint='use the short syntax for one TCP port: 80, "8080:80" (ranges, UDP and the long '
                "syntax are not)",
            )
        ports.append(int(match.group(2)))
    return ports[0]


def _depends_on(name: str, spec: dict[str, Any], file: str, services: dict[Any, Any]) -> list[str]:
    deps = spec.get("depends_on") or []
    if isinstance(deps, dict):
        for dep, cond in deps.items():
            condition = (cond or {}).get("condition", "service_started") if isinstance(cond, dict) else None
            if condition != "service_started":
                raise ComposeError(
                    f"{file}: service '{name}': depends_on '{dep}': condition {condition!r} is not supported",
                    hint="only service_started (the start order); the app's routed service is health-checked",
                )
        deps = list(deps)
    if not isinstance(deps, list):
        raise ComposeError(f"{file}: service '{name}': 'depends_on' must be a list or a mapping")
    for dep in deps:
        if dep not in services:
            raise ComposeError(f"{file}: service '{name}' depends on '{dep}', which is not a service here")
    return [str(d) for d in deps]


def _order(services: list[Service], deps: dict[str, list[str]], file: str) -> tuple[Service, ...]:
    """Dependencies first, else the file's order."""
    by_name = {s.name: s for s in services}
    done: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ComposeError(f"{file}: depends_on makes a cycle: {cycle}")
        visiting.append(name)
        for dep in deps[name]:
            visit(dep)
        visiting.pop()
        done.append(name)

    for s in services:
        visit(s.name)
    return tuple(by_name[n] for n in done)


def _routed(services: list[Service], setting: str, file: str) -> str:
    """The setting, else the first service with `ports:` in the file's order (as a person reads it)."""
    names = [s.name for s in services]
    if setting:
        if setting not in names:
            raise ComposeError(
                f"{file}: the app routes to service '{setting}', which is not in it (services: "
                f"{', '.join(names)})"
            )
        return setting
    for s in services:
        if s.port is not None:
            return s.name
    raise ComposeError(
        f"{file}: no service has 'ports:', so none can take the app's port",
        hint='add ports: ["80"] to the service that answers, or name it: pymachine app create --service NAME',
    )
