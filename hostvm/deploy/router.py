"""The router: one small container per app that holds the app's published port and relays each connection to
the release that is current, so that switching releases never closes or re-opens the port.

Why a container and not the host agent: the published port is then an ordinary one (`docker ps` shows it, the
host agent forwards it like any other, the resource saver wakes the machine for it, restart policies bring it
back after a reboot), and the switch is a rename of one file inside it. `nc -ll -e` (busybox) forks per
connection and runs the relay, which reads the target file then execs `nc TARGET PORT`: a connection accepted
before the switch keeps its release to the end, the next one goes to the new release. There is no moment in
which the port is closed or points at nothing. The target is the release's container *name*, resolved by the
engine's embedded DNS on the app's network, so it stays right when a reboot gives the release another address.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .. import images_io
from ..containers import api_errors
from ..errors import PymachineError
from .model import LABEL, App

IMAGE = "pymachine/busybox"
ROUTE_DIR = "/route"
# The relay runs once per connection; the file is read then, so a switch applies to the next connection.
RELAY = '#!/bin/sh\\nread -r host port < /route/target\\nexec nc "$host" "$port"\\n'
SETUP = (
    '[ -s /route/target ] || echo "$ROUTE_TARGET" > /route/target; '
    f"printf '{RELAY}' > /route/relay && chmod 755 /route/relay && "
    'exec nc -ll -p "$ROUTE_PORT" -e /route/relay'
)
DRAIN_GRACE_S = 1.0  # a relay that read the old target just before the switch has exec'd nc by then


def volume(app: App) -> str:
    return f"app-{app.name}-route"


def create(dc: Any, app: App, target: str, say: Any) -> Any:
    """Start the router with `target` (a release's container name) as its first route."""
    images_io.ensure_image(dc, IMAGE, "missing", say)
    try:
        return _run(dc, app, target)
    except BaseException:
        with contextlib.suppress(Exception):  # created but not started (its port taken): not left behind
            dc.containers.get(app.router).remove(force=True)
        raise


def _run(dc: Any, app: App, target: str) -> Any:
    with api_errors(
        f"starting the router of app '{app.name}'", hint=f"is port {app.port} taken? see: pymachine ps"
    ):
        return dc.containers.run(
            IMAGE,
            ["sh", "-c", SETUP],
            name=app.router,
            detach=True,
            environment={"ROUTE_TARGET": f"{target} {app.port}", "ROUTE_PORT": str(app.port)},
            ports={f"{app.port}/tcp": ("127.0.0.1", app.port)},
            network=app.network,
            volumes={volume(app): {"bind": ROUTE_DIR, "mode": "rw"}},
            labels={LABEL: app.name, "pymachine.app.role": "router"},
            restart_policy={"Name": "unless-stopped"},
        )


def switch(router: Any, app: App, target: str) -> None:
    """Point new connections at `target`: the file is replaced by a rename, never seen half-written."""
    command = 'echo "$1 $2" > /route/target.new && mv /route/target.new /route/target'
    with api_errors(f"switching the router of app '{app.name}'"):
        result = router.exec_run(["sh", "-c", command, "sh", target, str(app.port)])
    if result.exit_code != 0:
        raise PymachineError(
            f"the router of app '{app.name}' refused the switch to {target}: "
            f"{result.output.decode(errors='replace').strip()}"
        )


def target(router: Any) -> str:
    """The container name the router sends new connections to."""
    with api_errors("reading the router's route"):
        result = router.exec_run(["cat", "/route/target"])
    return result.output.decode(errors="replace").split()[0] if result.exit_code == 0 else ""


def connections_to(router: Any, target: str) -> int:
    """How many relays still carry a connection to `target` (their argv is `nc TARGET PORT`). Read with
    `top` (the engine reads /proc), not an exec: an exec starts a process in the container, seconds each on
    a loaded machine."""
    with api_errors("listing the router's connections"):
        top = router.top()
    titles = top.get("Titles") or []
    column = titles.index("CMD") if "CMD" in titles else -1
    count = 0
    for row in top.get("Processes") or []:
        argv = str(row[column]).split()
        if argv[:1] and argv[0].endswith("nc") and argv[1:2] == [target]:
            count += 1
    return count


def drain(router: Any, old: str, timeout: float) -> int:
    """Wait until no connection is relayed to `old` any more (or `timeout`); the number still open."""
    time.sleep(DRAIN_GRACE_S)
    deadline = time.monotonic() + timeout
    while True:
        left = connections_to(router, old)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)
