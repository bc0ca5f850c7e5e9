"""The engine side of a compose release (docs/deploy.md, "Compose apps"): build its services, start them on
the release's own network, tag them for a new release, and find or remove a release's containers.

Each service of release vN is container `app-NAME-vN-SERVICE` on network `app-NAME-vN`, where its service
name is a DNS alias (the web service reaches `http://backend:PORT` as under Compose); the routed service is
also on the app's network, where the router reaches it. Two releases run side by side during a switch, each
on its own network, so v2's web never talks to v1's backend.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import docker.errors

from .. import images_io
from ..containers import api_errors
from ..errors import PymachineError
from ..progress import Progress
from . import repo
from .compose import Plan
from .model import LABEL, RELEASE_LABEL, App, Release, ServiceRun

SERVICE_LABEL = "pymachine.app.service"


def build(dc: Any, app: App, version: int, plan: Plan, git_dir: Path, commit: str, say: Progress) -> tuple:
    """Every service with `build:` built from the pushed tree, the others' images found (or pulled), all
    tagged `app-NAME-SERVICE:vN`; on a failure the tags made so far go again."""
    made: list[ServiceRun] = []
    try:
        for svc in plan.services:
            tag = app.tag(version, svc.name)
            if svc.build is None:
                say(f"service '{svc.name}': image {svc.image}")
                images_io.ensure_image(dc, svc.image, "missing", say)
                with api_errors(f"tagging {tag}"):
                    image = str(dc.images.get(svc.image).id)
                    dc.api.tag(image, *tag.rsplit(":", 1))
            else:
                where = svc.build.context or "the top of the tree"
                say(f"service '{svc.name}': building {where}")
                request = {
                    "fileobj": io.BytesIO(repo.archive(git_dir, commit, svc.build.context)),
                    "custom_context": True,
                    "tag": tag,
                    "rm": True,
                    "decode": True,
                    "buildargs": svc.build.args or None,
                    "dockerfile": svc.build.dockerfile or None,
                    "labels": {LABEL: app.name, RELEASE_LABEL: str(version), SERVICE_LABEL: svc.name},
                }
                try:
                    image = images_io.build(dc, request, say)
                except PymachineError as exc:
                    raise PymachineError(
                        f"service '{svc.name}': {exc.message}; app '{app.name}' keeps serving {serving(app)}",
                        hint="fix the Dockerfile step above, commit and push again",
                    ) from exc
            made.append(ServiceRun(svc.name, image, dict(svc.environment), svc.command, svc.port))
    except BaseException:
        for run in made:
            untag(dc, app.tag(version, run.name))
        raise
    return tuple(made)


def retag(dc: Any, app: App, release: Release, version: int) -> None:
    """The images of `release` tagged for release `version` too (config set: same images, new release)."""
    for run in release.services:
        tag = app.tag(version, run.name)
        with api_errors(f"tagging {tag}"):
            dc.api.tag(run.image, *tag.rsplit(":", 1))


def start(dc: Any, app: App, release: Release) -> Any:
    """Start the release's services in order; the routed one's container."""
    net = app.release_network(release.version)
    with api_errors(f"creating network {net}"):
        try:
            dc.networks.get(net)
        except docker.errors.NotFound:
            dc.networks.create(net, driver="bridge", labels={LABEL: app.name})
    routed = None
    for run in release.services:
        name = app.service_container(release.version, run.name)
        environment = {**run.environment, **release.config}
        if run.name == release.routed:
            environment = {"PORT": str(port(app, release)), **environment}
        with api_errors(f"starting {name}"):
            container = dc.containers.create(
                app.tag(release.version, run.name),
                command=run.command,
                name=name,
                environment=environment,
                network=net,
                networking_config={net: dc.api.create_endpoint_config(aliases=[run.name])},
                labels={LABEL: app.name, RELEASE_LABEL: str(release.version), SERVICE_LABEL: run.name},
            )
            if run.name == release.routed:
                dc.networks.get(app.network).connect(container)
                routed = container
            container.start()
    assert routed is not None, "a compose release routes to one of its services"
    return routed


def port(app: App, release: Release) -> int:
    """Where the router connects in the release's serving container."""
    routed = release.routed_service
    return routed.port if routed is not None and routed.port is not None else app.port


def routed_container(app: App, release: Release) -> str:
    if release.services:
        return app.service_container(release.version, release.routed)
    return app.container(release.version)


def containers_of(dc: Any, app: App, version: int) -> list[Any]:
    with api_errors(f"listing the containers of app '{app.name}'"):
        found = dc.containers.list(all=True, filters={"label": f"{LABEL}={app.name}"})
    return [c for c in found if (c.labels or {}).get(RELEASE_LABEL) == str(version)]


def remove_release(dc: Any, app: App, version: int, stop_timeout: int | None = None) -> None:
    """Every container of release `version` (stopped first when `stop_timeout` is given) and its network."""
    for container in containers_of(dc, app, version):
        with api_errors(f"removing {container.name}"):
            if stop_timeout is not None and container.status == "running":
                container.stop(timeout=stop_timeout)
            container.remove(force=True)
    with api_errors(f"removing network {app.release_network(version)}"):
        try:
            dc.networks.get(app.release_network(version)).remove()
        except docker.errors.NotFound:
            pass


def untag(dc: Any, tag: str) -> None:
    try:
        dc.images.remove(tag, noprune=True)
    except docker.errors.APIError:
        pass  # not there, or still used by a container: the tag goes with the app


def release_tags(app: App, release: Release) -> list[str]:
    if release.services:
        return [app.tag(release.version, run.name) for run in release.services]
    return [app.tag(release.version)]


def serving(app: App) -> str:
    return f"v{app.current}" if app.current else "nothing (no release yet)"
