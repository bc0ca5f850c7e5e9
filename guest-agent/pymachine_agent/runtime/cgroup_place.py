"""Where each container's cgroup lives (under the agent's parent) and freezing a container's processes."""

from __future__ import annotations

import os
import signal as _signal
from dataclasses import dataclass

from pymachine_agent.runtime import procs
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.record import Record


@dataclass(frozen=True)
class CgroupPlace:
    root: str = "/sys/fs/cgroup"
    parent: str = "pymachine"

    def of(self, c: Record) -> Cgroup:
        return Cgroup(c.id, self.root, self.parent)

    def freeze(self, c: Record, frozen: bool) -> None:
        """Freeze (or thaw) every process of the container and record it in its state."""
        cg = self.of(c)
        if cg.enabled:
            cg.freeze(frozen)
        else:  # cgroup v1 host: stop every process of the container's pid namespace instead
            for pid in procs.container_pids(c.run().get("pid", 0), None):
                try:
                    os.kill(pid, _signal.SIGSTOP if frozen else _signal.SIGCONT)
                except ProcessLookupError:
                    pass
        c.state["paused"] = frozen
        c.save()
