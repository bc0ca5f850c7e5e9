"""Create, list and describe apps: what `pymachine app create|list|info|releases` render."""

from __future__ import annotations

import contextlib
import shutil
import socket
from dataclasses import dataclass

import docker.errors

from .. import containers, machines, paths
from ..errors import PymachineError, UsageError
from . import model, repo, services
from .model import App


@dataclass(frozen=True)
class Created:
    app: App
    remote: str  # the URL `git remote add` takes
    commands: list[str]  # what to paste into the project
    local_command: str  # the `git remote add` of the repository on this computer instead
    helper_found: bool  # git-remote-pymachine is on PATH (else git cannot use `remote`)
    helper_folder: str = ""  # where one is when PATH lacks it (beside pymachine's executable): add it to PATH


@dataclass(frozen=True)
class Status:
    """An app with what its machine's engine says about it (None: the machine is not running)."""

    app: App
    router: str | None  # the router container's state ("running", "exited", "missing")
    serving: str | None  # the current release container's state


def create(name: str, machine: str, port: int = 8080, service: str = "", compose_file: str = "") -> Created:
    """`service`/`compose_file`: a compose app's routed service and compose file (docs/deploy.md)."""
    model.check_name(name)
    model.check_port(port)
    if not machines.exists(machine):
        raise UsageError(
            f"machine '{machine}' does not exist", hint=f"create it first: pymachine create {machine} --start"
        )
    if (paths.app(name).state).exists():
        raise UsageError(f"app '{name}' exists already", hint=f"see it: pymachine app info {name}")
    for other in model.names():
        taken = model.load(other)
        if taken.port == port:  # on any machine: every router listens on this computer's 127.0.0.1
            raise UsageError(
                f"port {port} is app '{other}''s already", hint="give this app another one: --port N"
            )
    _check_free(port)
    paths.app(name).dir.mkdir(parents=True, exist_ok=True)
    try:
        repo.create(name)  # the other remote, and where a pushed commit is kept
        app = App(name=name, machine=machine, port=port, service=service, compose=compose_file)
        model.save(app)  # last: an app exists once its state file does
    except BaseException:
        shutil.rmtree(paths.app(name).dir, ignore_errors=True)
        raise
    helper, folder = repo.find_helper()
    return Created(
        app,
        repo.remote_url(name),
        repo.remote_commands(name),
        repo.local_remote_command(name),
        helper is not None,
        folder,
    )


def _check_free(port: int) -> None:
    """The router will listen on 127.0.0.1:port here: say now, not at the first push, that it is taken."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(
                f"port {port} is in use on this computer ({exc.strerror})", hint="choose another: --port N"
            ) from None


def all_apps() -> list[App]:
    return [model.load(n) for n in model.names()]


def status(name: str) -> Status:
    """The app and, when its machine runs, the state of its router and serving release (never starts it)."""
    app = model.load(name)
    with contextlib.suppress(PymachineError):
        if machines.get(app.machine).state == "running":
            dc = containers.client(app.machine, ensure=False)
            serving = app.current_release
            return Status(
                app,
                _state(dc, app.router),
                _state(dc, services.routed_container(app, serving)) if serving else None,
            )
    return Status(app, None, None)


def _state(dc: docker.DockerClient, container: str) -> str:
    try:
        return str(dc.containers.get(container).status)
    except docker.errors.NotFound:
        return "missing"
    except docker.errors.APIError as exc:
        return f"unknown ({exc})"
