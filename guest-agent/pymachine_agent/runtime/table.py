"""The agent's records of every container, by id, and the one lock and condition that order their changes:
waiters for an exit or a removal sleep on the condition."""

from __future__ import annotations

import os
import threading
import time

from pymachine_agent.runtime.errors import NotFound, RuntimeErr
from pymachine_agent.runtime.record import Record
from pymachine_agent.runtime.spec import ContainerSpec
from pymachine_agent.runtime.state import read_json


class ContainerTable:
    def __init__(self, root: str) -> None:
        """Loads the records under `root` (one folder per container)."""
        self.root = root
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._ctrs: dict[str, Record] = {}
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            config = read_json(os.path.join(path, "config.json"))
            if not config:
                continue  # a create that died half-way: nothing to run
            self._ctrs[name] = Record(
                name, path, ContainerSpec.from_json(config), read_json(os.path.join(path, "state.json"))
            )

    def get(self, ref: str) -> Record:
        with self.lock:
            return self._ctrs[self.resolve(ref)]

    def find(self, cid: str) -> Record | None:
        with self.lock:
            return self._ctrs.get(cid)

    def __contains__(self, cid: str) -> bool:
        return cid in self._ctrs

    def ids(self) -> list[str]:
        with self.lock:
            return list(self._ctrs)

    def records(self) -> list[Record]:
        with self.lock:
            return list(self._ctrs.values())

    def resolve(self, ref: str) -> str:
        """Full id for an id, a unique id prefix or a name (leading "/" allowed). NotFound otherwise."""
        with self.lock:
            if ref in self._ctrs:
                return ref
            name = ref.lstrip("/")
            for c in self._ctrs.values():
                if c.spec.name == name:
                    return c.id
            matches = [cid for cid in self._ctrs if cid.startswith(ref)] if ref else []
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise NotFound(f"No such container: {ref} (ambiguous id prefix)")
            raise NotFound(f"No such container: {ref}")

    def named(self, name: str, besides: Record | None = None) -> Record | None:
        """The container other than `besides` named `name` (no leading "/"), if any."""
        with self.lock:
            return next((c for c in self._ctrs.values() if c is not besides and c.spec.name == name), None)

    def add(self, c: Record) -> None:
        with self.lock:
            self._ctrs[c.id] = c

    def drop(self, cid: str) -> None:
        with self.lock:
            self._ctrs.pop(cid, None)
            self._cond.notify_all()

    # --- exits -----------------------------------------------------------------------------------------
    def exits(self, c: Record) -> int:
        """How many exits of `c` were seen so far: pass it to wait_exit to wait for the next one."""
        with self.lock:
            return c.exits

    def note_exit(self, c: Record, watching: bool | None = None) -> None:
        with self.lock:
            c.exits += 1
            if watching is not None:
                c.watching = watching
            self._cond.notify_all()

    def wait_exit(self, c: Record, seen: int, timeout: float | None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while c.exits == seen:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_removed(self, c: Record, timeout: float | None) -> None:
        end = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while c.id in self._ctrs:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise RuntimeErr(f"timed out waiting for {c.id} to be removed")
                self._cond.wait(left)
