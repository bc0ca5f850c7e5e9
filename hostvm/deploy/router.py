"""The router: one small container per app that holds the app's published port and relays each connection to
the release that is current, so that switching releases never closes or re-opens the port.

Why a container and not the host agent: the published port is then an ordinary one (`docker ps` shows it, the
host agent forwards it like any other, the resource saver wakes the machine for it, restart policies bring it
back after a reboot), and a switch is one new file in it. `nc -ll -e` (busybox) forks per connection and
runs the relay, which reads the newest complete route file then execs `nc TARGET PORT`: a connection accepted
before the switch keeps its release to the end, the next one goes to the new release. There is no moment in
which the port is closed or points at nothing. The target is the release's container *name*, resolved by the
engine's embedded DNS on the app's network, so it stays right when a reboot gives the release another address.

A switch writes a *new* file (named by a number larger than every other one there) through the engine's
archive API (`docker cp`), never rewrites one: the copy is not atomic, so the relay takes the newest file
whose line ends in `ok` and falls back to the one before while the new one is half-written. The archive API
is a call into the engine; an exec (`sh -c 'echo > f.new; mv'`) starts a process in the container, which
took 10-15 s on a loaded 2-core host under TCG.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable, Collection
from typing import Any

from .. import images_io
from ..containers import api_errors
from ..errors import PymachineError
from .model import LABEL, App

IMAGE = "pymachine/busybox"
ROUTE_DIR = "/route"
ROUTES = "/route/r"
RELAY_PATH = "/route/relay"
# The relay runs once per connection; the routes are read then, so a switch applies to the next connection.
RELAY = (
    "#!/bin/sh\\n"
    "for f in $(ls -r /route/r); do\\n"
    '  read -r host port mark < "/route/r/$f" && [ "$mark" = ok ] && exec nc "$host" "$port"\\n'
    "done\\nexit 1\\n"
)
KEEP = 5  # route files kept when the router starts (older ones are history nobody reads)
SETUP = (
    "mkdir -p /route/r && cd /route/r && "
    '{ [ -n "$(ls)" ] || echo "$ROUTE_TARGET ok" > 00000000000000000000; } && '
    f"ls -r | tail -n +{KEEP + 1} | xargs -r rm -f && "
    f"printf '{RELAY}' > /route/relay && chmod 755 /route/relay && "
    'exec nc -ll -p "$ROUTE_PORT" -e /route/relay'
)
DRAIN_GRACE_S = 1.0  # a relay that read the old target just before the switch has exec'd nc by then


def volume(app: App) -> str:
    return f"app-{app.name}-route"


def create(dc: Any, app: App, target: str, say: Any, port: int) -> Any:
    """Start the router with `target` (a release's container name, listening on `port`) as its first
    route."""
    images_io.ensure_image(dc, IMAGE, "missing", say)
    try:
        return _run(dc, app, target, port)
    except BaseException:
        with contextlib.suppress(Exception):  # created but not started (its port taken): not left behind
            dc.containers.get(app.router).remove(force=True)
        raise


def _run(dc: Any, app: App, target: str, port: int) -> Any:
    with api_errors(
        f"starting the router of app '{app.name}'", hint=f"is port {app.port} taken? see: pymachine ps"
    ):
        return dc.containers.run(
            IMAGE,
            ["sh", "-c", SETUP],
            name=app.router,
            detach=True,
            environment={"ROUTE_TARGET": f"{target} {port}", "ROUTE_PORT": str(app.port)},
            ports={f"{app.port}/tcp": ("127.0.0.1", app.port)},
            network=app.network,
            volumes={volume(app): {"bind": ROUTE_DIR, "mode": "rw"}},
            labels={LABEL: app.name, "pymachine.app.role": "router"},
            restart_policy={"Name": "unless-stopped"},
        )


def switch(router: Any, app: App, target: str, port: int) -> None:
    """Point new connections at `target`'s `port`: a new route file, newer than every other."""
    line = f"{target} {port} ok\n".encode()
    stamp = max(time.time_ns(), max(route_files(router), default=0) + 1)  # newer even if the clock went back
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"{stamp:020d}")
        info.size, info.mtime, info.mode = len(line), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(line))
    with api_errors(f"switching the router of app '{app.name}' to {target}"):
        if not router.put_archive(ROUTES, buf.getvalue()):
            raise PymachineError(f"the router of app '{app.name}' refused the switch to {target}")


def route_files(router: Any) -> list[int]:
    """The stamps of the route files there are."""
    with api_errors("reading the router's routes"):
        stream, _ = router.get_archive(ROUTES)
        data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [m.name.rpartition("/")[2] for m in tar.getmembers() if m.isfile()]
    return [int(n) for n in names if n.isdigit()]


def _processes(router: Any) -> list[tuple[str, str, list[str]]]:
    """(PID, PPID, argv) of the router's processes. Read with `top` (the engine reads /proc), not an exec: an
    exec starts a process in the container, seconds each on a loaded machine."""
    with api_errors("listing the router's connections"):
        top = router.top()
    titles = top.get("Titles") or []
    cmd = titles.index("CMD") if "CMD" in titles else -1
    pid = titles.index("PID") if "PID" in titles else 1
    ppid = titles.index("PPID") if "PPID" in titles else 2
    return [(str(row[pid]), str(row[ppid]), str(row[cmd]).split()) for row in top.get("Processes") or []]


def connections_to(router: Any, target: str, undecided: Collection[str] = ()) -> int:
    """How many relays still carry a connection to `target` (their argv is `nc TARGET PORT`), plus those
    of the `undecided` relays (PIDs) that have not exec'd `nc` yet: they may yet pick `target`."""
    processes = _processes(router)
    relayed = len(undecided_relays(router, processes) & set(undecided))
    for _pid, _ppid, argv in processes:
        relayed += bool(argv) and argv[0].endswith("nc") and argv[1:2] == [target]
    return relayed


def undecided_relays(router: Any, processes: list[tuple[str, str, list[str]]] | None = None) -> set[str]:
    """The PIDs of relays that have not exec'd `nc TARGET` yet: the listener's children still running the
    relay script (or not yet past the fork). Taken after a switch, every relay forked before it is either
    here or counted by its `nc TARGET` argv: under load a relay can read the old route and exec `nc OLD`
    seconds later, and the old release must not be stopped in between (that connection would hang)."""
    processes = _processes(router) if processes is None else processes
    pids = {pid for pid, _ppid, _argv in processes}
    # the listener's parent is outside the container; its children (the relays) are inside
    return {pid for pid, ppid, argv in processes if ppid in pids and RELAY_PATH in argv}


def drain(router: Any, old: str, timeout: float, say: Callable[[str], None]) -> int:
    """Wait until no connection is relayed to `old` any more (or `timeout`); the number still open."""
    undecided = undecided_relays(router)
    time.sleep(DRAIN_GRACE_S)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        left = connections_to(router, old, undecided)
        if left == 0 or time.monotonic() > deadline:
            return left
        if not told:
            say(f"waiting for {left} connection(s) to {old} to finish")
            told = True
        time.sleep(0.2)
