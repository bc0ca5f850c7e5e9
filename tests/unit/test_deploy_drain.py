"""The router's drain (hostvm/deploy/router.py): a relay that read the old route but has not exec'd
`nc OLD` yet (a slow shell on a loaded machine) still counts as a connection to the old release, so the old
release is not stopped under it; the listener itself and relays forked after the switch do not hold it."""

from __future__ import annotations

from typing import Any

from pymachine.hostvm.deploy import router

TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
LISTENER = ["root", "100", "50", "0", "17:00", "?", "00:00:00", "nc -ll -p 8080 -e /route/relay"]


class Router:
    """`top` of a router container, as the engine answers it, one snapshot per call."""

    def __init__(self, *snapshots: list[list[str]]) -> None:
        self.snapshots = list(snapshots)

    def top(self) -> dict[str, Any]:
        rows = self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]
        return {"Titles": TITLES, "Processes": [LISTENER, *rows]}


def proc(pid: int, cmd: str) -> list[str]:
    return ["root", str(pid), "100", "0", "17:00", "?", "00:00:00", cmd]


def test_a_relay_still_reading_the_routes_holds_the_old_release_until_it_picks() -> None:
    slow = proc(101, "/bin/sh /route/relay")
    rt = Router([slow])
    undecided = router.undecided_relays(rt)
    assert undecided == {"101"}  # not the listener (its parent is outside the container)
    assert router.connections_to(rt, "app-web-v1", undecided) == 1
    # it exec'd nc to the old release: still one; to the new one: none left
    assert router.connections_to(Router([proc(101, "nc app-web-v1 8080")]), "app-web-v1", undecided) == 1
    assert router.connections_to(Router([proc(101, "nc app-web-v2 8080")]), "app-web-v1", undecided) == 0
    # a relay forked after the switch (not in the snapshot) reads the new route: it does not hold v1
    assert router.connections_to(Router([proc(102, "/bin/sh /route/relay")]), "app-web-v1", undecided) == 0


def test_drain_waits_for_the_undecided_relay() -> None:
    slow = proc(101, "/bin/sh /route/relay")
    rt = Router([slow], [slow], [proc(101, "nc app-web-v1 8080")], [])
    said: list[str] = []
    assert router.drain(rt, "app-web-v1", 30, said.append) == 0
    assert rt.snapshots == [[]] and said == ["waiting for 1 connection(s) to app-web-v1 to finish"]
