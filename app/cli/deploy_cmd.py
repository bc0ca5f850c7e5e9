"""`pymachine app ...`: apps deployed by `git push` (create, list, info, logs, releases, rollback, config, rm)
and `app receive`, which the app repository's pre-receive hook runs. Rendering only: the logic lives in
`pymachine.hostvm.deploy` (docs/deploy.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from typing import Any

from pymachine.app.cli import formats, render
from pymachine.hostvm import paths
from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.deploy import apps, model, release, repo
from pymachine.hostvm.deploy.model import App
from pymachine.hostvm.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app", help="apps deployed by git push: app create|list|info|logs|releases|rollback|config|rm"
    )
    verbs = p.add_subparsers(dest="app_verb", required=True, metavar="VERB")

    v = verbs.add_parser("create", help="make an app and the git remote to push it to")
    v.add_argument("app", metavar="NAME")
    v.add_argument(
        "--machine", default=DEFAULT_NAME, help="the machine it runs on (default: the current one)"
    )
    v.add_argument(
        "--port", type=int, default=8080, help="the port it listens on ($PORT), published on localhost"
    )
    v.add_argument(
        "--service", default="", help="compose: the service the port goes to (default: first with ports:)"
    )
    v.add_argument(
        "--compose", default="", metavar="FILE", help="build this compose file, even with a Dockerfile"
    )
    v.set_defaults(func=_create)

    v = verbs.add_parser("list", help="apps, their serving release and URL")
    v.add_argument("--format", help="table (default), json, or a Go template")
    v.set_defaults(func=_list)

    v = verbs.add_parser("info", help="an app: machine, port, serving release, config, containers")
    v.add_argument("app", metavar="NAME")
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.set_defaults(func=_info)

    v = verbs.add_parser("logs", help="the serving release's log")
    v.add_argument("app", metavar="NAME")
    v.add_argument("-f", "--follow", action="store_true", help="keep following")
    v.add_argument("-n", "--tail", default="all", help="only the last N lines")
    v.set_defaults(func=_logs)

    v = verbs.add_parser("releases", help="an app's releases, the serving one marked")
    v.add_argument("app", metavar="NAME")
    v.add_argument("--format", help="table (default), json, or a Go template")
    v.set_defaults(func=_releases)

    v = verbs.add_parser("rollback", help="serve an earlier release again (default: the one before)")
    v.add_argument("app", metavar="NAME")
    v.add_argument("version", nargs="?", metavar="vN")
    v.set_defaults(func=_rollback)

    v = verbs.add_parser("config", help="the app's environment: config set NAME K=V ... | unset NAME K ...")
    config = v.add_subparsers(dest="config_verb", required=True, metavar="set|unset")
    c = config.add_parser("set", help="set variables: a new release with the same image")
    c.add_argument("app", metavar="NAME")
    c.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    c.set_defaults(func=_config_set)
    c = config.add_parser("unset", help="remove variables: a new release with the same image")
    c.add_argument("app", metavar="NAME")
    c.add_argument("keys", nargs="+", metavar="KEY")
    c.set_defaults(func=_config_unset)

    v = verbs.add_parser("rm", help="remove an app: its containers, images, network and repository")
    v.add_argument("app", metavar="NAME")
    v.set_defaults(func=_rm)

    # Run by the repository's pre-receive hook with git's ref lines on stdin; its output is the push's.
    v = verbs.add_parser("receive")
    v.add_argument("app", metavar="NAME")
    v.set_defaults(func=_receive)


def _create(args: argparse.Namespace) -> int:
    made = apps.create(args.app, args.machine, args.port, args.service, args.compose)
    print(f"created app '{made.app.name}' on machine '{made.app.machine}', serving at {made.app.url}")
    print("deploy it from your project's folder (a Dockerfile or a compose.yaml; the app listens on $PORT):")
    for line in made.commands:
        print(f"  {line}")
    if not made.helper_found and made.helper_folder:  # shipped beside pymachine, outside PATH
        print(f"note: git runs {repo.HELPER} for {made.remote}; it is in {made.helper_folder}, not on PATH:")
        print(f'  export PATH={shlex.quote(made.helper_folder)}:"$PATH"')
        print("or add the app's repository on this computer instead:")
    elif not made.helper_found:
        print(f"note: git runs {repo.HELPER} for {made.remote}, and it is not on PATH; put the folder of")
        print("  pymachine's own executable on PATH, or add the app's repository on this computer instead:")
    else:
        print("or, without git-remote-pymachine, the app's repository on this computer:")
    print(f"  {made.local_command}")
    return 0


def _row(app: App) -> dict[str, Any]:
    return {
        "Name": app.name,
        "Machine": app.machine,
        "Release": f"v{app.current}" if app.current else "-",
        "Releases": len(app.releases),
        "Port": app.port,
        "URL": app.url,
    }


def _list(args: argparse.Namespace) -> int:
    rows = [_row(a) for a in apps.all_apps()]
    columns = [("NAME", "Name"), ("MACHINE", "Machine"), ("RELEASE", "Release"), ("URL", "URL")]
    print(formats.format_rows(rows, columns, args.format))
    return 0


def _info(args: argparse.Namespace) -> int:
    st = apps.status(args.app)
    app = st.app
    data = {
        **_row(app),
        "Created": _when(app.created),
        "Remote": repo.remote_url(app.name),
        "Repository": str(paths.app(app.name).repo),
        "Config": app.config,
        "Router": st.router,
        "Serving": st.serving,
        "HealthTimeout": app.health_timeout,
        **({"Services": _services(app)} if app.current_release and app.current_release.services else {}),
    }
    if args.format == "json":
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "Config":
            value = " ".join(f"{k}={v}" for k, v in sorted(app.config.items())) or "-"
        elif value is None:
            value = "(machine not running)" if key in ("Router", "Serving") and app.current else "-"
        print(f"{key + ':':<{width + 2}}{value}")
    return 0


def _services(app: App) -> str:
    """A compose release's services, the routed one marked: `backend, web (port 80)`."""
    current = app.current_release
    assert current is not None
    return ", ".join(
        f"{s.name} (port {s.port or app.port})" if s.name == current.routed else s.name
        for s in current.services
    )


def _releases(args: argparse.Namespace) -> int:
    app = model.load(args.app)
    rows = [
        {
            "Version": r.label,
            "Serving": "*" if r.version == app.current else "",
            "Created": _when(r.created),
            "Description": r.description,
            "Image": r.image.replace("sha256:", "")[:12],
            "Config": " ".join(f"{k}={v}" for k, v in sorted(r.config.items())),
        }
        for r in sorted(app.releases, key=lambda r: -r.version)
    ]
    columns = [
        ("VERSION", "Version"),
        ("SERVING", "Serving"),
        ("CREATED", "Created"),
        ("IMAGE", "Image"),
        ("DESCRIPTION", "Description"),
    ]
    print(formats.format_rows(rows, columns, args.format))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    version = model.parse_version(args.version) if args.version else None
    done = release.rollback(args.app, version, render.progress)
    render.finish()
    print(f"{args.app} {done.label}")
    return 0


def _config_set(args: argparse.Namespace) -> int:
    changes: dict[str, str | None] = dict(model.parse_assignments(args.pairs))
    return _config(args.app, changes)


def _config_unset(args: argparse.Namespace) -> int:
    bad = [k for k in args.keys if not model.KEY_RE.fullmatch(k)]
    if bad:
        raise UsageError(f"invalid config key {', '.join(bad)}")
    return _config(args.app, dict.fromkeys(args.keys))


def _config(name: str, changes: dict[str, str | None]) -> int:
    done = release.set_config(name, changes, render.progress)
    render.finish()
    if done is not None:
        print(f"{name} {done.label}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    release.remove(args.app, render.progress)
    return 0


def _logs(args: argparse.Namespace) -> int:
    tail: int | str = "all"
    if args.tail != "all":
        if not args.tail.isdigit():
            raise UsageError(f"--tail {args.tail}: a number of lines, or all")
        tail = int(args.tail)
    out = sys.stdout.buffer
    for chunk in release.logs(args.app, args.follow, tail):
        out.write(chunk)
        out.flush()
    return 0


def _receive(args: argparse.Namespace) -> int:
    """Plain lines on stderr (git shows them to the pusher as `remote: ...`), never a live display."""
    say = render.Plain(sys.stderr)
    release.receive(args.app, sys.stdin.read().splitlines(), say)
    return 0


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"
