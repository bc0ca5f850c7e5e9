"""What the runtime reports to its owner: a container's network namespace is ready, its run ended, and
Docker-style events. The engine sets these once every part exists (see engine/__init__.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymachine_agent.runtime.record import Record

log = logging.getLogger("pymachine_agent.runtime")

NetnsHook = Callable[[str, int], None]
TeardownHook = Callable[[str], None]
EventHook = Callable[[str, str, dict[str, str]], None]


@dataclass
class Callbacks:
    """`on_netns(container_id, pid)`, `on_teardown(container_id)`, `on_event(container_id, action, attrs)`;
    one instance shared by the runtime's parts, so a hook set later reaches all of them."""

    on_netns: NetnsHook | None = None
    on_teardown: TeardownHook | None = None
    on_event: EventHook | None = None

    def event(self, c: Record, action: str, **attrs: Any) -> None:
        if self.on_event:
            try:
                self.on_event(c.id, action, {"name": c.spec.name, **{k: str(v) for k, v in attrs.items()}})
            except Exception:
                log.exception("event hook failed")

    def netns_hook(self, c: Record) -> NetnsHook | None:
        """The hook to run inside this container's start handshake: only containers with a network
        namespace of their own are wired by the network manager."""
        return self.on_netns if c.spec.network == "new" else None

    def teardown(self, c: Record) -> None:
        if self.on_teardown and c.spec.network == "new":
            try:
                self.on_teardown(c.id)
            except Exception:
                log.exception("network teardown of %s failed", c.id)
