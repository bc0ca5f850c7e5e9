"""Releases of an app on its machine's engine: build a pushed commit, start a release, wait until it answers,
switch the router to it, drain and stop the one before. Every verb of `pymachine app` that changes what serves
ends in `roll_out`; a failure anywhere before the switch leaves the serving release alone and raises.

Progress goes to `say` as typed values: `StageProgress` (source "deploy"), `BuildOutput`, and plain notes.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors

from .. import containers, images_io, locks, paths, ssh
from ..containers import api_errors
from ..errors import NotFoundError, PymachineError
from ..progress import Progress, Stages, quiet
from . import compose, model, repo, router, services
from .model import LABEL, RELEASE_LABEL, App, Release, ServiceRun

PUSH_STAGES = ["build", "start", "health check", "switch", "stop old"]
RUN_STAGES = PUSH_STAGES[1:]
DRAIN_S = 30.0  # connections to the old release may finish for this long before it is stopped
STOP_S = 10  # then SIGTERM, and SIGKILL after this many seconds
LOG_TAIL = 20  # lines of a failed release's log shown with the error


# -- verbs --------------------------------------------------------------------------------------------------
def receive(name: str, ref_lines: list[str], say: Progress = quiet) -> Release:
    """The pre-receive hook: deploy the pushed commit, or raise (git then rejects the push)."""
    ref = model.pushed_commit(ref_lines)
    return deploy(name, paths.app(name).repo, ref.new, say)


def deploy(name: str, git_dir: Path, commit: str, say: Progress = quiet) -> Release:
    """Build `commit` of repository `git_dir` (its Dockerfile, or its compose file's services) and make it
    the serving release, or raise with the reason. Both remotes end here: the hook of the repository on this
    computer, and `git-remote-pymachine`, which reads the pusher's own repository."""
    with _locked(name) as app:
        plan = _plan(app, git_dir, commit)
        dc = containers.client(app.machine, progress=say)
        version = app.next_version
        stages = Stages(PUSH_STAGES, say, "deploy")
        say(f"deploying {commit[:7]} to app '{name}' as v{version}")
        runs: tuple[ServiceRun, ...] = ()
        with stages.step("build"):
            if plan is None:
                image = build(dc, app, version, repo.archive(git_dir, commit), say)
            else:
                runs = services.build(dc, app, version, plan, git_dir, commit, say)
                image = next(r.image for r in runs if r.name == plan.routed)
        release = Release(
            version,
            image,
            dict(app.config),
            time.time(),
            f"push {commit[:7]}",
            commit,
            services=runs,
            routed=plan.routed if plan else "",
        )
        return _new_release(dc, app, release, stages, say)


def _plan(app: App, git_dir: Path, commit: str) -> compose.Plan | None:
    """None for a Dockerfile build; the compose plan when the app names a compose file, or when the tree
    has no Dockerfile at its top but a compose file."""
    file = app.compose
    if not file:
        if repo.has_file(git_dir, commit, "Dockerfile"):
            return None
        file = next((f for f in compose.FILES if repo.has_file(git_dir, commit, f)), "")
        if not file:
            raise PymachineError(
                f"commit {commit[:7]} has no Dockerfile and no compose file at the top of its tree: "
                "nothing to build",
                hint="add a Dockerfile (FROM pymachine/busybox or an image in the machine) or a "
                "compose.yaml, commit, push",
            )
    elif not repo.has_file(git_dir, commit, file):
        raise PymachineError(
            f"commit {commit[:7]} has no {file}, the compose file app '{app.name}' is set to build"
        )
    return compose.parse(repo.read_file(git_dir, commit, file), file, app.service)


def rollback(name: str, version: int | None = None, say: Progress = quiet) -> Release:
    """Serve an earlier release again (its image and its config); default: the one before the current."""
    with _locked(name) as app:
        if not app.releases:
            raise PymachineError(
                f"app '{name}' has no release yet", hint="deploy it: git push pymachine main"
            )
        if version is None:
            older = [r.version for r in app.releases if r.version < app.current]
            if not older:
                raise PymachineError(f"app '{name}' has no release before v{app.current} to roll back to")
            version = max(older)
        release = app.release(version)
        if version == app.current:
            say(f"app '{name}' already serves v{version}")
            return release
        dc = containers.client(app.machine, progress=say)
        roll_out(dc, app, release, Stages(RUN_STAGES, say, "deploy"), say)
        # its config too, as Heroku's rollback: the next push or config change starts from what serves
        model.save(replace(app, current=version, config=dict(release.config)))
        say(f"app '{name}' serves v{version} again at {app.url}")
        return release


def set_config(name: str, changes: dict[str, str | None], say: Progress = quiet) -> Release | None:
    """Change the environment (None removes a key): a new release with the current image, or, before the
    first push, only the config the first release will get."""
    with _locked(name) as app:
        config = {k: v for k, v in {**app.config, **changes}.items() if v is not None}
        current = app.current_release
        app = replace(app, config=config)
        if current is None:
            model.save(app)
            say(f"app '{name}' has no release yet: the first push runs with this config")
            return None
        version = app.next_version
        what = ", ".join(sorted(changes))
        verb = "config set" if any(v is not None for v in changes.values()) else "config unset"
        release = replace(
            current, version=version, config=config, created=time.time(), description=f"{verb} {what}"
        )
        dc = containers.client(app.machine, progress=say)
        if current.services:
            services.retag(dc, app, current, version)
        else:
            with api_errors(f"tagging {app.tag(version)}"):
                dc.api.tag(current.image, app.repository, f"v{version}")
        return _new_release(dc, app, release, Stages(RUN_STAGES, say, "deploy"), say)


def _new_release(dc: Any, app: App, release: Release, stages: Stages, say: Progress) -> Release:
    """Roll out a release whose image is tagged already; recorded once it serves, else its tag goes."""
    try:
        roll_out(dc, app, release, stages, say)
    except BaseException:
        for tag in services.release_tags(app, release):
            services.untag(dc, tag)
        raise
    model.save(app.with_release(release))
    say(f"app '{app.name}' {release.label} is serving at {app.url}")
    return release


def remove(name: str, say: Progress = quiet) -> None:
    """Containers (router and releases), images, network, route volume, then the repository and state."""
    with _locked(name) as app:
        try:
            dc = containers.client(app.machine, progress=say)
        except NotFoundError:
            dc = None
            say(f"machine '{app.machine}' is gone: only the app's files are removed")
        if dc is not None:
            with api_errors(f"removing app '{name}'"):
                for c in dc.containers.list(all=True, filters={"label": f"{LABEL}={name}"}):
                    c.remove(force=True)
                for release in app.releases:
                    for tag in services.release_tags(app, release):
                        services.untag(dc, tag)
                    if release.services:
                        services.remove_release(dc, app, release.version)  # its network
                for what, getter in ((app.network, dc.networks), (router.volume(app), dc.volumes)):
                    try:
                        getter.get(what).remove()
                    except docker.errors.NotFound:
                        pass
        shutil.rmtree(paths.app(name).dir)
        say(f"removed app '{name}'")


def logs(name: str, follow: bool = False, tail: int | str = "all") -> Iterator[bytes]:
    """The serving release's log (stdout and stderr, as `docker logs`)."""
    app = model.load(name)
    if not app.current:
        raise PymachineError(f"app '{name}' has no release yet", hint="deploy it: git push pymachine main")
    dc = containers.client(app.machine)
    serving = app.current_release
    assert serving is not None
    with api_errors(f"reading the log of {services.routed_container(app, serving)}"):
        container = dc.containers.get(services.routed_container(app, serving))
        out = container.logs(stream=True, follow=follow, tail=tail)
        yield from out


# -- one release, from start to serving -------------------------------------------------------------------
def build(dc: Any, app: App, version: int, context: bytes, say: Progress) -> str:
    request = {
        "fileobj": io.BytesIO(context),
        "custom_context": True,
        "tag": app.tag(version),
        "rm": True,
        "decode": True,
        "labels": {LABEL: app.name, RELEASE_LABEL: str(version)},
    }
    try:
        return images_io.build(dc, request, say)
    except PymachineError as exc:
        raise PymachineError(
            f"{exc.message}; app '{app.name}' keeps serving {services.serving(app)}",
            hint="fix the Dockerfile step above, commit and push again",
        ) from exc


def roll_out(dc: Any, app: App, release: Release, stages: Stages, say: Progress) -> None:
    name = services.routed_container(app, release)
    port = services.port(app, release)
    serving = app.current_release if app.current != release.version else None
    try:
        with stages.step("start"):
            _ensure_network(dc, app)
            _remove_if_there(dc, name)
            services.remove_release(dc, app, release.version)  # what a crashed deploy of vN left
            if release.services:
                say(
                    f"services {', '.join(r.name for r in release.services)}; port {app.port} goes to "
                    f"service '{release.routed}' port {port}"
                )
                container = services.start(dc, app, release)
            else:
                with api_errors(f"starting {name}"):
                    container = dc.containers.run(
                        app.tag(release.version),  # `docker ps` shows app-NAME:vN
                        name=name,
                        detach=True,
                        environment={"PORT": str(app.port), **release.config},
                        network=app.network,
                        labels={LABEL: app.name, RELEASE_LABEL: str(release.version)},
                    )
        with stages.step("health check"):
            wait_ready(dc, app, container, release, say, port)
            # Only now: a restart policy would restart a release that exits, hiding why it never answered.
            for each in services.containers_of(dc, app, release.version):
                _check_alive(app, each, release)
                with api_errors(f"setting the restart policy of {each.name}"):
                    each.update(restart_policy={"Name": "unless-stopped"})
        with stages.step("switch"):
            rt = _route(dc, app, name, say, port)
    except BaseException:
        # the serving release (and the route to it) stay as they were
        _remove_if_there(dc, name)
        services.remove_release(dc, app, release.version)
        raise
    with stages.step("stop old"):
        if serving is not None:
            old = services.routed_container(app, serving)
            try:
                _retire(dc, app, rt, old, serving.version, say)
            except PymachineError as exc:
                # The new release serves already: the deploy stands (and is recorded); the old one is left.
                say(f"warning: {old} was not stopped: {exc.message} (remove it: pymachine rm -f {old})")


def _retire(dc: Any, app: App, rt: Any, old: str, version: int, say: Progress) -> None:
    began = time.monotonic()
    left = router.drain(rt, old, DRAIN_S, say)
    if left:
        say(f"{left} connection(s) to {old} still open after {DRAIN_S:.0f} s: stopping it anyway")
    else:
        say(f"no connection to {old} left ({time.monotonic() - began:.1f} s): stopping it")
    _remove_if_there(dc, old, stop=True)
    services.remove_release(dc, app, version, stop_timeout=STOP_S)


def _route(dc: Any, app: App, name: str, say: Progress, port: int) -> Any:
    """New connections to the app's port go to container `name` from now on; the router is made on the first
    release (and is ready once its port takes a connection)."""
    try:
        rt = dc.containers.get(app.router)
    except docker.errors.NotFound:
        rt = router.create(dc, app, name, say, port)
        _wait_port(app, rt, dc, time.monotonic() + app.health_timeout, app.port, "the router")
        return rt
    if rt.status != "running":
        with api_errors(f"starting {app.router}"):
            rt.start()
    router.switch(rt, app, name, port)
    return rt


def wait_ready(
    dc: Any, app: App, container: Any, release: Release, say: Progress, port: int | None = None
) -> None:
    """Until the release answers: its HEALTHCHECK says healthy, or (without one) its port takes a TCP
    connection from the guest. Raises with the reason and the log's tail if it exits, turns unhealthy, or
    the app's health timeout passes."""
    deadline = time.monotonic() + app.health_timeout
    port = app.port if port is None else port
    image = dc.images.get(release.image)
    check = (image.attrs.get("Config") or {}).get("Healthcheck") or {}
    has_check = bool(check.get("Test")) and check["Test"][0] != "NONE"
    say(f"waiting for {container.name}: {'its HEALTHCHECK' if has_check else f'port {port} accepting'}")
    if has_check:
        while True:
            container.reload()
            _check_alive(app, container, release)
            health = (container.attrs.get("State") or {}).get("Health") or {}
            status = health.get("Status")
            if status == "healthy":
                return
            if status == "unhealthy":
                last = (health.get("Log") or [{}])[-1]
                said = str(last.get("Output") or "").strip()
                why = f"exit status {last.get('ExitCode')}" + (f": {said}" if said else "")
                _fail(app, container, release, f"its HEALTHCHECK reports unhealthy ({why})")
            if time.monotonic() > deadline:
                _fail(app, container, release, f"not healthy after {app.health_timeout:.0f} s ({status})")
            time.sleep(0.5)
    _wait_port(app, container, dc, deadline, port, None, release)


def _wait_port(
    app: App,
    container: Any,
    dc: Any,
    deadline: float,
    port: int,
    what: str | None,
    release: Release | None = None,
) -> None:
    """A TCP connect from inside the guest to the container's address on the app's network (over the
    machine's SSH link: the guest reaches container addresses, this host does not)."""
    import paramiko  # loaded by ssh.connect; imported here so that `app --help` and `app list` need not

    client = ssh.connect(app.machine)
    try:
        transport = client.get_transport()
        assert transport is not None
        while True:
            container.reload()
            if release is not None:
                _check_alive(app, container, release)
            address = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(
                app.network
            ) or {}
            ip = address.get("IPAddress")
            if ip:
                try:
                    transport.open_channel("direct-tcpip", (ip, port), ("127.0.0.1", 0), timeout=10).close()
                    return
                except paramiko.ChannelException:
                    pass  # refused: not listening yet
            if time.monotonic() > deadline:
                reason = f"nothing accepts connections on port {port} after {app.health_timeout:.0f} s"
                if release is None:
                    raise PymachineError(f"{what} of app '{app.name}': {reason}")
                _fail(app, container, release, reason, hint=f"does it listen on $PORT ({port})?")
            time.sleep(0.3)
    finally:
        client.close()


def _check_alive(app: App, container: Any, release: Release) -> None:
    state = container.attrs.get("State") or {}
    if state.get("Status") in ("exited", "dead"):
        _fail(app, container, release, f"it exited with status {state.get('ExitCode')}")


def _fail(app: App, container: Any, release: Release, reason: str, hint: str = "") -> None:
    try:
        tail = container.logs(tail=LOG_TAIL).decode(errors="replace").rstrip()
    except docker.errors.APIError:
        tail = ""
    log = f"\nits last log lines:\n{tail}" if tail else ""
    raise PymachineError(
        f"release v{release.version} of app '{app.name}' never became healthy: {container.name}: {reason}; "
        f"app '{app.name}' keeps serving {services.serving(app)}{log}",
        hint=hint or "fix the app, commit and push again",
    )


def _ensure_network(dc: Any, app: App) -> None:
    with api_errors(f"creating network {app.network}"):
        try:
            dc.networks.get(app.network)
        except docker.errors.NotFound:
            dc.networks.create(app.network, driver="bridge", labels={LABEL: app.name})


def _remove_if_there(dc: Any, name: str, stop: bool = False) -> None:
    with api_errors(f"removing {name}"):
        try:
            container = dc.containers.get(name)
        except docker.errors.NotFound:
            return
        if stop and container.status == "running":
            container.stop(timeout=STOP_S)
        container.remove(force=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[App]:
    """The app's deploy lock (pushes, rollbacks and config changes take turns) and its state read under it."""
    model.load(name)  # a clear "does not exist" before a lock file is made
    with locks.held(paths.app(name).lock):
        yield model.load(name)
