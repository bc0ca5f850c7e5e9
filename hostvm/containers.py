"""Container verbs on the host: docker-py through the machine's forwarded engine socket.

The façade the CLI (and the desktop app) call: it makes sure the machine exists, runs and has a ready host
agent, hands out a docker-py client bound to `<machine>/docker.sock`, loads the builtin images
(`pymachine/busybox`, `pymachine/debian`) on first use — there is no public registry to pull them from — and
turns docker-py's exceptions into PymachineError with a hint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import endpoints, paths
from .config import DEFAULT_NAME
from .container_images import parse_name as parse_builtin_name
from .errors import NotFoundError, PymachineError, UsageError
from .reasons import plain_reason
from .units import human_duration
from .version import API_VERSION

if TYPE_CHECKING:
    # docker-py and requests (0.1 s) are imported by the functions that talk to an engine: the CLI loads this
    # module for `run --help`, `docker-env` and a `ps` that finds no machine, which need neither.
    import docker
    import docker.errors
    from docker.models.containers import Container

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)?")


def _quiet(_message: str) -> None:
    pass


def builtin_name(reference: str) -> str | None:
    """`pymachine/debian:bookworm` → `pymachine/debian` (any tag its recipe builds); None otherwise."""
    try:
        repo, _tag, _folder = parse_builtin_name(reference)
    except NotFoundError:
        return None
    return repo


def ensure_machine(name: str = DEFAULT_NAME, progress: Progress | None = None) -> None:
    """Create (default machine only) and start `name` when needed; ensure its host agent is ready."""
    from . import machines
    from .hostagent import launcher

    say = progress or _quiet
    if not machines.exists(name):
        if name != DEFAULT_NAME:
            raise NotFoundError(
                f"machine '{name}' does not exist", hint=f"create it: pymachine create {name} --start"
            )
        say(f"creating machine '{name}' (first use)")
        machines.create(name, progress=say)
    if machines.get(name).state != "running":
        say(f"starting machine '{name}'")
        machines.start(name, say)  # its last stage is launcher.ensure_running
    else:
        launcher.ensure_running(name, say)


def client(
    machine: str = DEFAULT_NAME, ensure: bool = True, progress: Progress | None = None
) -> docker.DockerClient:
    """A docker-py client for the machine's engine."""
    import docker

    if ensure:
        ensure_machine(machine, progress)
    sock = paths.machine(machine).docker_socket
    if sys.platform != "win32" and not sock.exists():  # Windows: a named pipe, not a file
        raise PymachineError(
            f"machine '{machine}' has no engine socket ({sock})", hint=f"start it: pymachine start {machine}"
        )
    with api_errors():
        # The guest agent speaks up to 1.44; naming it saves the negotiation round trip on every command.
        address = endpoints.engine_address(machine)
        return docker.DockerClient(base_url=address, version=API_VERSION, timeout=300)


IMAGE_MISSING_HINT = (
    "this machine has no registry access: load the image (pymachine load -i FILE) or pull it "
    "from a registry you run (e.g. localhost:5000/...)"
)


@contextlib.contextmanager
def api_errors(what: str = "", hint: str = "", missing: str = IMAGE_MISSING_HINT) -> Iterator[None]:
    """docker-py's failures as a message and a hint (`hint` for an engine's refusal, when the caller knows
    what a person can do about it; `missing` for an image that is not there, fit to the operation: how to
    get it for one that needs it, but nothing to do for a remove)."""
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise NotFoundError(f"{what + ': ' if what else ''}{_explain(exc)}", hint=missing) from exc
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what + ': ' if what else ''}{_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        raise PymachineError(f"{what + ': ' if what else ''}{_explain(exc)}", hint=hint) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PymachineError(
            f"{what + ': ' if what else ''}cannot talk to the engine: {plain_reason(exc)}",
            hint="check the machine: pymachine list; pymachine start",
        ) from exc


def _explain(exc: docker.errors.APIError | docker.errors.DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc)


# -- port / env / volume options, parsed as the docker CLI does ---------------------------------------------
def parse_ports(specs: list[str]) -> dict[str, Any]:
    """`[ip:]host:container[/proto]` or `container[/proto]` → docker-py's `ports=` mapping."""
    out: dict[str, Any] = {}
    for spec in specs:
        rest, _, proto = spec.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise UsageError(f"bad protocol in -p {spec}: use tcp or udp")
        parts = rest.rsplit(":", 2) if rest.count(":") <= 2 else None
        if not parts:
            raise UsageError(f"bad -p {spec}", hint="use HOST:CONTAINER, IP:HOST:CONTAINER or CONTAINER")
        container = parts[-1]
        host: Any
        if len(parts) == 1:
            host = None
        elif len(parts) == 2:
            host = int(parts[0]) if parts[0] else None
        else:
            host = (parts[0].strip("[]"), int(parts[1])) if parts[1] else (parts[0].strip("[]"),)
        if not container.isdigit():
            raise UsageError(f"bad container port in -p {spec}")
        key = f"{container}/{proto}"
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [host]
        else:
            out[key] = host
    return out


def parse_env(specs: list[str]) -> list[str]:
    """`KEY=VALUE` as given; a bare `KEY` takes the value from this environment (as `docker run -e`)."""
    out = []
    for spec in specs:
        if "=" in spec:
            out.append(spec)
        elif spec in os.environ:
            out.append(f"{spec}={os.environ[spec]}")
    return out


@dataclass
class RunOptions:
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    detach: bool = False
    remove: bool = False
    ports: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    interactive: bool = False
    tty: bool = False
    pull: str = "missing"  # docker run --pull: missing | always | never
    console_size: tuple[int, int] | None = None  # -t: (rows, columns) before the process starts


def create(dc: docker.DockerClient, opts: RunOptions, progress: Any = None) -> Container:
    from docker.models.containers import _create_container_args

    from . import images_io

    images_io.ensure_image(dc, opts.image, opts.pull, progress)
    kwargs: dict[str, Any] = dict(
        image=opts.image,
        command=opts.command or None,
        name=opts.name,
        ports=parse_ports(opts.ports) or None,
        environment=parse_env(opts.env) or None,
        volumes=opts.volumes or None,
        stdin_open=opts.interactive,
        tty=opts.tty,
        # Not detached = AttachStdin + StdinOnce: our stdin's end closes the container's (as `docker run -i`).
        detach=opts.detach,
    )
    with api_errors("creating the container"):
        # docker-py's own split of run's keywords into the create body and HostConfig, plus the one field it
        # does not know: ConsoleSize, the size a -t terminal has before the process starts (as `docker run`).
        given = {k: v for k, v in kwargs.items() if v is not None}
        body = _create_container_args({**given, "version": dc.api._version})
        if opts.tty and opts.console_size:
            body["host_config"]["ConsoleSize"] = list(opts.console_size)
        created = dc.api.create_container(**body)
        return dc.containers.get(created["Id"])


def start(container: Container) -> None:
    """Start; when it publishes ports, the host listeners are live once this returns (contracts §4)."""
    try:
        with api_errors(f"starting {container.name}"):
            container.start()
    except PymachineError as exc:
        exc.hint = exc.hint or start_hint(exc.message, container.name)
        raise


# The engine's words for a published port it could not bind: the host agent's ("host port 127.0.0.1:8080 is
# already in use"), the guest's ("host port 80/tcp is already in use in the guest"), docker's ("Bind for
# 0.0.0.0:8080 failed: port 8080/tcp is already allocated").
_PORT_TAKEN = ("is already in use", "is already allocated")


def start_hint(message: str, name: str) -> str:
    """What to do when a start failed on a taken port: docker leaves the container created, so a second `run`
    with the same --name would fail on the name next."""
    if "port " not in message or not any(s in message for s in _PORT_TAKEN):
        return ""
    return (
        "publish another host port (-p OTHER:CONTAINER) or stop what holds this one; "
        f"'{name}' was created but not started: pymachine rm {name}"
    )


def summary(c: Container, forwards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One row of `ps`, shaped like `docker ps --format json`. With the host agent's `forwards`, a port shows
    the address it is really bound to on this machine (a guest seeded before `default_host_ip` existed, or one
    without settings, reports 0.0.0.0 for "not asked")."""
    attrs = c.attrs
    bound = {(f["container"], f["proto"], int(f["host_port"])): f["host_ip"] for f in forwards or []}
    ports = []
    for key, bindings in (attrs.get("NetworkSettings", {}).get("Ports") or {}).items():
        proto = key.partition("/")[2] or "tcp"
        for b in bindings or []:
            host_port = int(b.get("HostPort") or 0)
            ip = bound.get((c.id, proto, host_port)) or b.get("HostIp") or "0.0.0.0"
            ports.append(f"{ip}:{host_port}->{key}")
        if not bindings:
            ports.append(key)
    cmd = attrs.get("Config", {}).get("Cmd") or []
    return {
        "ID": c.id[:12],
        "Image": attrs.get("Config", {}).get("Image")
        or (c.image.tags[0] if c.image and c.image.tags else ""),
        "Command": " ".join(cmd) if isinstance(cmd, list) else str(cmd),
        "Created": attrs.get("Created", ""),
        "State": attrs.get("State", {}).get("Status", c.status),
        "Status": _short_status(attrs.get("State", {})),
        "Ports": ", ".join(ports),
        "Names": c.name,
    }


def _short_status(state: dict[str, Any]) -> str:
    """`Running`, `Exited (0)`: what the desktop app shows next to its own uptime column. A container that
    never started (its start failed: a taken port) is `Created`, as `status_text`, moby's State.String and
    now the guest engine say (an older guest agent recorded it exited with code 128)."""
    status = state.get("Status", "")
    if status == "exited" and parse_time(state.get("StartedAt")) is None:
        return "Created"
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)})"
    return status.capitalize() if status else ""


def status_text(state: dict[str, Any], now: dt.datetime | None = None) -> str:
    """Docker's STATUS column from a container's `State`: `Up 5 seconds`, `Up 2 hours (Paused)`,
    `Exited (0) 2 minutes ago`, `Created`, `Restarting (1) 3 seconds ago`, `Dead` (moby's State.String)."""
    now = now or dt.datetime.now(dt.UTC)
    status = state.get("Status", "")
    started, finished = parse_time(state.get("StartedAt")), parse_time(state.get("FinishedAt"))
    if status in ("running", "paused") or state.get("Running"):
        if state.get("Restarting") or status == "restarting":
            return f"Restarting ({state.get('ExitCode', 0)}) {_ago(finished, now)}".rstrip()
        up = f"Up {human_duration((now - started).total_seconds())}" if started else "Up"
        if state.get("Paused") or status == "paused":
            return f"{up} (Paused)"
        health = (state.get("Health") or {}).get("Status")
        return f"{up} ({health})" if health and health != "none" else up
    if status == "restarting":
        return f"Restarting ({state.get('ExitCode', 0)}) {_ago(finished, now)}".rstrip()
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    if status == "created" or started is None:
        return "Created"
    if finished is None:
        return ""
    return f"Exited ({state.get('ExitCode', 0)}) {_ago(finished, now)}"


def _ago(when: dt.datetime | None, now: dt.datetime) -> str:
    return f"{human_duration((now - when).total_seconds())} ago" if when else ""


def parse_time(text: Any) -> dt.datetime | None:
    """RFC 3339 (nanoseconds allowed) → aware datetime; None for empty or Go's zero time `0001-01-01...`."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return None
    match = _RFC3339.fullmatch(text.strip())
    if not match:
        return None
    head, frac, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z", "z") else zone
    iso = head + (f".{frac[:6].ljust(6, '0')}" if frac else "") + offset
    try:
        return dt.datetime.fromisoformat(iso)
    except ValueError:
        return None


def image_summary(img: Any) -> list[dict[str, Any]]:
    tags = img.tags or ["<none>:<none>"]
    rows = []
    for tag in tags:
        repo, _, version = tag.rpartition(":")
        rows.append(
            {
                "Repository": repo,
                "Tag": version,
                "ID": img.short_id.replace("sha256:", ""),
                "Created": img.attrs.get("Created", ""),
                "Size": img.attrs.get("Size", 0),
            }
        )
    return rows
