"""The machine's kernel modules (overlay, veth, bridge, nftables, ...): the guest init loads them only once
the agent answers, so that a cold boot's engine answers `/_ping`, `version`, an image pull without waiting
for a `modprobe -a` (0.85-1.3 s of a quiet TCG boot; docs/machines.md, "eighth pass"). The agent asks for
them with SIGUSR1 to the init right after it binds its socket; the init writes `$PYMACHINE_MODULES` (a JSON
`{"status": N, "log": PATH}`) once they are in. The engine starts then (its bridge and nftables, its
reconcile of the containers the boot ended); the API holds what needs it, and answers with an error a person
can act on when the modules failed.

An agent not run by the guest init (tests on this host, an ssh-provisioned host) has no `$PYMACHINE_MODULES`:
its kernel is the host's business, and the gate is open from the start.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from .errors import Unavailable as KernelNotReady

ENV = "PYMACHINE_MODULES"
POLL_S = 0.05  # how often a waiter looks for the init's status file (a few stats for the ~1 s of a modprobe)

__all__ = ["ENV", "KernelGate", "KernelNotReady"]


class KernelGate:
    def __init__(self, status_path: str | None) -> None:
        self.status_path = status_path
        self.error: str | None = None
        self._done = threading.Event()
        if status_path is None:
            self._done.set()

    @classmethod
    def from_env(cls) -> KernelGate:
        return cls(os.environ.get(ENV) or None)

    def ask(self) -> None:
        """Tell the guest init (our parent, PID 1) that the agent answers: it loads the modules now. Nobody
        else's parent gets a signal (a test that sets $PYMACHINE_MODULES writes the file itself)."""
        if self.status_path is not None and not self.loaded() and os.getppid() == 1:
            os.kill(1, signal.SIGUSR1)

    def loaded(self) -> bool:
        """Whether the init has finished loading them (successfully or not): reads its status file once."""
        if self._done.is_set():
            return True
        assert self.status_path is not None
        try:
            with open(self.status_path) as fh:
                status = json.load(fh)
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            status = {"status": -1, "log": f"{self.status_path} ({exc})"}
        if status.get("status"):
            self.error = (
                f"the machine's kernel modules failed to load (modprobe exit status {status.get('status')}, "
                f"see {status.get('log')} in the machine): containers and networks cannot work; "
                "restart the machine (`pymachine restart`), and if it persists recreate it"
            )
        self._done.set()
        return True

    def wait_loaded(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.loaded():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True
