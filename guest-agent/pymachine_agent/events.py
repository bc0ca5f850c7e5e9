"""Two event streams: Docker's `/events` (container, image, network, volume actions) and the host-agent
port stream of docs/contracts.md §4, whose `add` events the publisher waits to see acknowledged."""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from . import protocol

# -- Docker /events --------------------------------------------------------------------------------


def make_event(kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> dict:
    now = time.time_ns()
    attrs = dict(attributes or {})
    event: dict[str, Any] = {
        "Type": kind,
        "Action": action,
        "Actor": {"ID": actor_id, "Attributes": attrs},
        "scope": "local",
        "time": now // 1_000_000_000,
        "timeNano": now,
    }
    if kind in ("container", "image"):
        # the legacy fields: API < 1.30 clients (and compose v1) still read them
        event["status"] = action
        event["id"] = actor_id
        if "image" in attrs:
            event["from"] = attrs["image"]
    return event


def event_matches(event: dict, filters: dict[str, list[str]]) -> bool:
    """Docker's event filter semantics: each key must match one of its values (keys are ANDed)."""
    attrs = event["Actor"]["Attributes"]
    actor = event["Actor"]["ID"]
    kind = event["Type"]
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = kind in values
        elif key == "event":
            action = event["Action"].split(":", 1)[0]
            ok = event["Action"] in values or action in values
        elif key == "container":
            ok = kind == "container" and any(
                actor.startswith(v) or attrs.get("name") == v.lstrip("/") for v in values
            )
        elif key == "image":
            ok = any(attrs.get("image") == v or (kind == "image" and actor == v) for v in values)
        elif key in ("network", "volume"):
            ok = kind == key and any(actor.startswith(v) or attrs.get("name") == v for v in values)
            if key == "network" and not ok:
                ok = any(attrs.get("network") == v for v in values)
        elif key == "label":
            ok = False
            for v in values:
                k, eq, val = v.partition("=")
                if k in attrs and (not eq or attrs[k] == val):
                    ok = True
        elif key == "scope":
            ok = "local" in values
        else:
            ok = True
        if not ok:
            return False
    return True


class Subscription:
    def __init__(self, bus: EventBus, filters: dict[str, list[str]]) -> None:
        self.bus = bus
        self.filters = filters
        self.queue: queue.Queue[dict | None] = queue.Queue()

    def get(self, timeout: float | None = None) -> dict | None:
        """The next matching event, or None on timeout/close."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.bus.unsubscribe(self)
        self.queue.put(None)


class EventBus:
    """Publish/subscribe with a history ring so `since` can replay past events."""

    def __init__(self, history: int = 2000) -> None:
        self.lock = threading.Lock()
        self.history: deque[dict] = deque(maxlen=history)
        self.subscribers: list[Subscription] = []

    def publish(
        self, kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None
    ) -> dict:
        event = make_event(kind, action, actor_id, attributes)
        with self.lock:
            self.history.append(event)
            subs = list(self.subscribers)
        for sub in subs:
            if event_matches(event, sub.filters):
                sub.queue.put(event)
        return event

    def subscribe(self, filters: dict[str, list[str]], since: float | None = None) -> Subscription:
        sub = Subscription(self, filters)
        with self.lock:
            if since is not None:
                for event in self.history:
                    if event["timeNano"] >= _ns(since) and event_matches(event, filters):
                        sub.queue.put(event)
            self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            if sub in self.subscribers:
                self.subscribers.remove(sub)

    def past(self, filters: dict[str, list[str]], since: float | None, until: float) -> list[dict]:
        with self.lock:
            return [
                e
                for e in self.history
                if (since is None or e["timeNano"] >= _ns(since))
                and e["timeNano"] <= int(until * 1e9) + 2_000
                and event_matches(e, filters)
            ]


def _ns(seconds: float) -> int:
    """Seconds (float, from a query string) → ns, rounded down a little: a float of ~1.8e9 s only keeps
    ~0.2 µs, and an event must not drop out of its own `since`."""
    return int(seconds * 1e9) - 2_000


# -- host agent port stream ------------------------------------------------------------------------


class PortAckError(Exception):
    """The host agent refused (or never acknowledged) a published port."""


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.error = ""


class PortBroker:
    """Tells subscribed host agents about published ports and waits for their acknowledgements.

    `current` is the set of ports published right now (replayed to every new subscriber after the
    hello line). `publish` blocks until every live subscriber acked the `add`, bounded by `ack_timeout`.
    """

    def __init__(self, ack_timeout: float = 10.0) -> None:
        self.ack_timeout = ack_timeout
        self.lock = threading.Lock()
        self.current: dict[tuple[str, str, str, int], dict] = {}  # (container, proto, ip, port) → add event
        self.subscribers: list[queue.Queue[dict | None]] = []
        self.pending: dict[str, _Pending] = {}
        self.latest: dict[str, dict] = {}  # type → the last state-like event (`watch`), part of every resync

    def subscribe(self) -> tuple[queue.Queue[dict | None], list[dict]]:
        """Register a subscriber; returns its queue and the lines to send first (hello + resync)."""
        q: queue.Queue[dict | None] = queue.Queue()
        with self.lock:
            first = [protocol.hello_event()] + list(self.current.values()) + list(self.latest.values())
            self.subscribers.append(q)
        return q, first

    def announce(self, event: dict) -> None:
        """Send an event that replaces the previous one of its type (no ack), and replay it on resync."""
        with self.lock:
            self.latest[event["type"]] = event
            subs = list(self.subscribers)
        for q in subs:
            q.put(event)

    def unsubscribe(self, q: queue.Queue[dict | None]) -> None:
        with self.lock:
            if q in self.subscribers:
                self.subscribers.remove(q)
            orphaned = not self.subscribers
            pending = list(self.pending.values()) if orphaned else []
        # nobody left to ack: release waiting starts rather than make them time out
        for p in pending:
            p.ok = True
            p.done.set()

    @property
    def has_subscribers(self) -> bool:
        with self.lock:
            return bool(self.subscribers)

    def ack(self, event_id: str, ok: bool, error: str = "") -> bool:
        with self.lock:
            p = self.pending.get(event_id)
        if p is None:
            return False
        p.ok, p.error = ok, error
        p.done.set()
        return True

    def add(self, event: dict) -> None:
        """Announce one published port (contracts §4 event without `id`) and wait, bounded by
        `ack_timeout`, for every subscribed host agent to acknowledge it. Raises PortAckError naming the
        port on a refusal or a timeout; the caller unpublishes (and `remove` is then announced)."""
        event = protocol.port_event(
            "add",
            secrets.token_hex(16),
            event["container"],
            event["proto"],
            event.get("host_ip") or "127.0.0.1",
            event["host_port"],
            event.get("guest_port") or event["host_port"],
        )
        key = (event["container"], event["proto"], event["host_ip"], event["host_port"])
        with self.lock:
            self.current[key] = event
            subs = list(self.subscribers)
            p = _Pending()
            if subs:
                self.pending[event["id"]] = p
            for q in subs:
                q.put(event)
        if not subs:
            return
        try:
            if not p.done.wait(self.ack_timeout):
                raise PortAckError(
                    f"host agent did not acknowledge port {event['host_ip']}:{event['host_port']}"
                    f"/{event['proto']} within {self.ack_timeout:g}s"
                )
            if not p.ok:
                raise PortAckError(
                    p.error or f"host port {event['host_ip']}:{event['host_port']} was refused by the host"
                )
        except PortAckError:
            self._send_remove([self._pop(key)])
            raise
        finally:
            with self.lock:
                self.pending.pop(event["id"], None)

    def restore(self, event: dict) -> None:
        """Record a port that is already published (agent restart) so new subscribers get it in the resync."""
        event = protocol.port_event(
            "add",
            secrets.token_hex(16),
            event["container"],
            event["proto"],
            event.get("host_ip") or "127.0.0.1",
            event["host_port"],
            event.get("guest_port") or event["host_port"],
        )
        with self.lock:
            self.current[(event["container"], event["proto"], event["host_ip"], event["host_port"])] = event

    def remove(self, event: dict) -> None:
        """Announce that one port is no longer published (no ack awaited)."""
        key = (event["container"], event["proto"], event.get("host_ip") or "127.0.0.1", event["host_port"])
        self._send_remove([self._pop(key)])

    def _pop(self, key: tuple[str, str, str, int]) -> dict | None:
        with self.lock:
            return self.current.pop(key, None)

    def _send_remove(self, adds: list[dict | None]) -> None:
        events = [
            protocol.port_event(
                "remove",
                secrets.token_hex(16),
                a["container"],
                a["proto"],
                a["host_ip"],
                a["host_port"],
                a["guest_port"],
            )
            for a in adds
            if a is not None
        ]
        with self.lock:
            subs = list(self.subscribers)
        for event in events:
            for q in subs:
                q.put(event)

    def withdraw(self, container: str) -> None:
        """Send `remove` for every port of `container` still announced (on die, remove)."""
        with self.lock:
            adds = [self.current.pop(k) for k in [k for k in self.current if k[0] == container]]
        self._send_remove(adds)

    def stream(self, q: queue.Queue[dict | None], keepalive: float = 15.0) -> Iterator[dict | None]:
        """Events for one subscriber; yields None every `keepalive` seconds so writers notice a gone peer."""
        while True:
            try:
                item = q.get(timeout=keepalive)
            except queue.Empty:
                yield None
                continue
            if item is None:
                return
            yield item
