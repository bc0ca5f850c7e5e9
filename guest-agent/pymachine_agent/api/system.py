"""`/_ping`, `/version`, `/info`, `/events`, `/system/df`, and the host ↔ guest protocol of contracts §4."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import protocol
from ..events import EventBus, PortBroker
from ..shares import mount_report
from .http import ClientGone, HTTPError, Request
from .server import Router

if TYPE_CHECKING:
    from ..engine import SystemService
    from ..fsevents import ChangeMirror
    from ..shares import Shares

PING_HEADERS = [
    ("Cache-Control", "no-cache, no-store, must-revalidate"),
    ("Pragma", "no-cache"),
    ("Swarm", "inactive"),
    ("Builder-Version", "1"),
]


def register(
    router: Router,
    system: SystemService,
    bus: EventBus,
    ports: PortBroker,
    changes: ChangeMirror,
    shares: Shares,
) -> None:
    """The Docker system endpoints (`system`, and `bus` for /events) and the host agent's protocol: port
    events (`ports`), host file changes relayed into the guest (`changes`), the shares the host agent mounted
    (`shares`)."""
    r = router.route

    @r("GET", "/_ping")
    def ping(req: Request) -> None:
        # moby answers HEAD with Content-Length: 0 (not the GET body's length)
        body = b"" if req.method == "HEAD" else b"OK"
        req.conn.send(200, body, "text/plain; charset=utf-8", headers=PING_HEADERS)

    @r("GET", "/version")
    def version(req: Request) -> tuple[int, dict]:
        return 200, system.version()

    @r("GET", "/info")
    def info(req: Request) -> tuple[int, dict]:
        return 200, system.info()

    @r("GET", "/system/df")
    def df(req: Request) -> tuple[int, dict]:
        return 200, system.df()

    @r("GET", "/events")
    def events(req: Request) -> None:
        filters = req.filters()
        since = _float(req.query.get("since"))
        until = _float(req.query.get("until"))
        out = req.conn.stream(200, "application/json")
        try:
            if until is not None and until <= time.time():
                # a closed window: replay and end
                for event in bus.past(filters, since, until):
                    out.write_json(event)
                out.close()
                return
            sub = bus.subscribe(filters, since)
            try:
                while True:
                    if until is not None and time.time() >= until:
                        break
                    wait = 1.0 if until is None else max(0.0, min(1.0, until - time.time()))
                    event = sub.get(timeout=wait)
                    if event is None:
                        if req.conn.peer_closed():
                            break
                        continue
                    if until is not None and event["time"] > until:
                        break
                    out.write_json(event)
                out.close()
            finally:
                sub.close()
        except ClientGone:
            pass

    # -- host ↔ guest protocol ------------------------------------------------------------------

    broker: PortBroker = ports

    @r("GET", protocol.API_PREFIX + "/info")
    def pm_info(req: Request) -> tuple[int, dict]:
        # with the share list: the host agent PUTs it only where it differs (a cold boot's seed carried it)
        return 200, {**protocol.info(), "shares": shares.listed()}

    @r("GET", protocol.API_PREFIX + "/shares")
    def pm_shares_get(req: Request) -> tuple[int, dict]:
        """The share list and the init's mount report (`start` warns of a share it could not mount): read
        here, where a `cat` over SSH forked a shell in the booting guest."""
        return 200, {"shares": shares.listed(), "report": mount_report()}

    @r("GET", protocol.API_PREFIX + "/events")
    def pm_events(req: Request) -> None:
        q, first = broker.subscribe()
        try:
            out = req.conn.stream(200, "application/x-ndjson")
            for line in first:
                out.write_json(line)
            for event in broker.stream(q, keepalive=2.0):
                if event is None:
                    if req.conn.peer_closed():
                        break
                    continue
                out.write_json(event)
        except ClientGone:
            pass
        finally:
            broker.unsubscribe(q)
            req.conn.close_after = True

    @r("POST", protocol.API_PREFIX + "/fs-events")
    def pm_fs_events(req: Request) -> tuple[int, dict]:
        try:
            batch = protocol.parse_fs_changes(req.json())
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        return 200, changes.apply(batch)

    @r("PUT", protocol.API_PREFIX + "/shares")
    def pm_shares(req: Request) -> tuple[int, dict]:
        """The host's share list after a hot-plug (`pymachine mount add` on a running machine, sshfs)."""
        from ..shares import parse_shares

        body = req.json()
        try:
            listed = parse_shares(body.get("shares") if isinstance(body, dict) else None)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        if listed is None:
            raise HTTPError(400, 'the body is {"shares": [{"path": "/abs", "readonly": false}, ...]}')
        if not shares.enabled:
            # an agent whose seed has no share list treats bind sources as guest paths; it stays that way
            raise HTTPError(409, "this agent was started without a share list")
        shares.shares = listed
        return 200, {"shares": [s.path for s in listed]}

    def device_shares(req: Request) -> tuple[list[protocol.DeviceShare], float]:
        listed = {s.path: s.readonly for s in shares.shares or () if s.transport != "sync"}
        try:
            return protocol.parse_device_shares(req.json(), listed)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None

    @r("POST", protocol.API_PREFIX + "/quiesce")
    def pm_quiesce(req: Request) -> tuple[int, dict]:
        """Before a save: the page cache flushed and the device shares unmounted (devshares.py),
        {"busy": null} or {"busy": "why they stay"} (then all of them stay mounted)."""
        from .. import devshares

        entries, _ = device_shares(req)
        return 200, {"busy": devshares.quiesce(entries)}

    @r("POST", protocol.API_PREFIX + "/remount")
    def pm_remount(req: Request) -> tuple[int, dict]:
        """After a resume: the device shares mounted again (devshares.py), {"mounted": {path: error|null}}."""
        from .. import devshares

        entries, wait_s = device_shares(req)
        return 200, {"mounted": devshares.remount(entries, wait_s)}

    @r("POST", protocol.API_PREFIX + "/ports/ack")
    def pm_ack(req: Request) -> tuple[int, dict]:
        try:
            event_id, ok, error = protocol.parse_ack(req.json())
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        if not broker.ack(event_id, ok, error):
            raise HTTPError(404, f"no pending port event {event_id}")
        return 200, {"id": event_id, "ok": ok}


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise HTTPError(400, f"invalid timestamp {value!r}") from None
