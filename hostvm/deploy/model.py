"""An app and its releases: the typed values the CLI (and the desktop app) render, the names of the engine
objects that belong to an app, and its state file (written atomically, read back into these values).

Pure except `load`/`save`/`names`; the engine work lives in release.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .. import paths, store
from ..errors import NotFoundError, UsageError

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]|[a-z]")
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
LABEL = "pymachine.app"  # on every container of an app: its name
RELEASE_LABEL = "pymachine.app.release"
STATE_VERSION = 1


@dataclass(frozen=True)
class ServiceRun:
    """One service of a compose release, as it runs: what a rollback or config change starts again."""

    name: str
    image: str  # the image id (the tag `app-NAME-SERVICE:vN` names it too)
    environment: dict[str, str]  # the compose file's; the app's config is laid over it at start
    command: list[str] | None
    port: int | None  # its container port (the routed service's is where the router connects)


@dataclass(frozen=True)
class Release:
    """One release: an image and the config it runs with. Rollback makes an older one current again."""

    version: int
    image: str  # the image id (the tag `app-NAME:vN` names it too); compose: the routed service's
    config: dict[str, str]
    created: float
    description: str  # "push 1a2b3c4", "config set GREETING", ...
    commit: str = ""
    services: tuple[ServiceRun, ...] = ()  # a compose release's services in start order; () = a Dockerfile's
    routed: str = ""  # the compose service the app's port goes to

    @property
    def routed_service(self) -> ServiceRun | None:
        return next((s for s in self.services if s.name == self.routed), None)

    @property
    def label(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class App:
    name: str
    machine: str
    port: int  # the app listens on it in its container; published on 127.0.0.1:port
    created: float = field(default_factory=time.time)
    config: dict[str, str] = field(default_factory=dict)  # what the next release runs with
    releases: tuple[Release, ...] = ()
    current: int = 0  # the version serving the port; 0 = nothing deployed yet
    health_timeout: float = 120.0
    service: str = ""  # compose: the service the port is routed to ("" = the first with `ports:`)
    compose: str = ""  # compose: this file in the tree, even when a Dockerfile is there too

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def network(self) -> str:
        return f"app-{self.name}"

    @property
    def router(self) -> str:
        return f"app-{self.name}-router"

    @property
    def repository(self) -> str:
        return f"app-{self.name}"

    def container(self, version: int) -> str:
        """The container that serves release `version`: app-NAME-vN, or for a recorded compose release its
        routed service's (what `app info`, `app logs` and the desktop app's Apps tab look at)."""
        recorded = next((r for r in self.releases if r.version == version), None)
        if recorded is not None and recorded.services:
            return self.service_container(version, recorded.routed)
        return f"app-{self.name}-v{version}"

    def tag(self, version: int, service: str = "") -> str:
        return f"{self.repository}-{service}:v{version}" if service else f"{self.repository}:v{version}"

    def service_container(self, version: int, service: str) -> str:
        return f"app-{self.name}-v{version}-{service}"

    def release_network(self, version: int) -> str:
        """A compose release's own network: its services find each other by name there, and two releases
        running side by side during a switch never answer for each other."""
        return f"app-{self.name}-v{version}"

    @property
    def next_version(self) -> int:
        return max((r.version for r in self.releases), default=0) + 1

    def release(self, version: int) -> Release:
        for r in self.releases:
            if r.version == version:
                return r
        known = ", ".join(r.label for r in self.releases) or "none yet"
        raise NotFoundError(f"app '{self.name}' has no release v{version} (releases: {known})")

    @property
    def current_release(self) -> Release | None:
        return next((r for r in self.releases if r.version == self.current), None)

    def with_release(self, release: Release) -> App:
        return replace(self, releases=(*self.releases, release), current=release.version)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UsageError(
            f"invalid app name {name!r}",
            hint="use 1-32 lower-case letters, digits and '-', starting with a letter (it names containers, "
            "an image and a network)",
        )
    return name


def check_port(port: int) -> int:
    if not 1024 <= port <= 65535:
        raise UsageError(f"invalid app port {port}", hint="use a port from 1024 to 65535 (e.g. --port 8080)")
    return port


def parse_version(text: str) -> int:
    """`v3` or `3` → 3."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise UsageError(
            f"invalid release {text!r}", hint="name a release as vN, e.g. v1 (pymachine app releases NAME)"
        )
    return int(digits)


def parse_assignments(specs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` words of `config set` (every bad one reported at once)."""
    out: dict[str, str] = {}
    bad = []
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq or not KEY_RE.fullmatch(key):
            bad.append(spec)
        else:
            out[key] = value
    if bad or not out:
        raise UsageError(
            f"invalid config {', '.join(repr(b) for b in bad) or '(none given)'}",
            hint="give KEY=VALUE pairs; KEY is letters, digits and '_', not starting with a digit",
        )
    return out


@dataclass(frozen=True)
class PushedRef:
    old: str
    new: str
    ref: str


ZERO = "0" * 40


def pushed_commit(lines: list[str]) -> PushedRef:
    """The one commit a `git push` deploys, from pre-receive's stdin (`OLD NEW REF` per line). One branch,
    main or master, not a deletion: anything else is refused with a message the pusher sees."""
    refs = [PushedRef(*line.split()) for line in lines if len(line.split()) == 3]
    if not refs:
        raise UsageError("nothing to deploy: the push named no branch")
    if len(refs) > 1:
        raise UsageError(
            f"a push deploys one branch, this one updates {len(refs)} refs",
            hint="push only the branch to deploy: git push pymachine main",
        )
    ref = refs[0]
    if ref.ref not in DEPLOY_BRANCHES:
        raise UsageError(
            f"only main or master is deployed, not {ref.ref}",
            hint="push your branch as main: git push pymachine HEAD:main",
        )
    if set(ref.new) == {"0"}:
        raise UsageError(f"{ref.ref} cannot be deleted here", hint="remove the app: pymachine app rm NAME")
    return ref


# -- state file ----------------------------------------------------------------------------------------------
def to_json(app: App) -> dict[str, Any]:
    data = asdict(app)
    data["releases"] = [asdict(r) for r in app.releases]
    data["state_version"] = STATE_VERSION
    return data


def from_json(data: dict[str, Any]) -> App:
    releases = tuple(
        Release(
            version=int(r["version"]),
            image=str(r["image"]),
            config={str(k): str(v) for k, v in (r.get("config") or {}).items()},
            created=float(r.get("created") or 0),
            description=str(r.get("description") or ""),
            commit=str(r.get("commit") or ""),
            services=tuple(
                ServiceRun(
                    name=str(s["name"]),
                    image=str(s["image"]),
                    environment={str(k): str(v) for k, v in (s.get("environment") or {}).items()},
                    command=[str(a) for a in s["command"]] if s.get("command") is not None else None,
                    port=int(s["port"]) if s.get("port") is not None else None,
                )
                for s in r.get("services") or []
            ),
            routed=str(r.get("routed") or ""),
        )
        for r in data.get("releases") or []
    )
    return App(
        name=str(data["name"]),
        machine=str(data["machine"]),
        port=int(data["port"]),
        created=float(data.get("created") or 0),
        config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
        releases=releases,
        current=int(data.get("current") or 0),
        health_timeout=float(data.get("health_timeout") or 120.0),
        service=str(data.get("service") or ""),
        compose=str(data.get("compose") or ""),
    )


def load(name: str) -> App:
    data = store.read_json(paths.app(check_name(name)).state)
    if data is None:
        raise NotFoundError(f"app '{name}' does not exist", hint="list them: pymachine app list")
    return from_json(data)


def save(app: App) -> None:
    store.write_json(paths.app(app.name).state, to_json(app))


def names() -> list[str]:
    root = paths.apps_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "app.json").is_file())
