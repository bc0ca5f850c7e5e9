"""Memory back to the host after a resume where the guest's RAM is shared memory (virtiofs shares).

virtiofsd maps the guest's RAM, so a machine with a virtiofs share has it in a shared memfd (domain.py
`shared_memory`). QEMU 7.2 loads a saved state by reading every zero page of the stream to check that it is
zero, and a read of shared memory allocates a page where private memory would map the zero page: a resumed
1 GiB machine with a share held all 1024 MiB of its memfd (RssShmem), where the guest used ~150 MiB and the
same machine without a share held ~270 MiB. The guest's free page reporting does not give them back: it
reported those pages before the save and they stay marked reported, so it never reports them again.

So a while after each link-up (after a resume: by the parked agent or by one started for it) the host
agent compares what QEMU holds of the shared memory (RssShmem) with what the guest uses (MemTotal - MemFree);
when it holds more than EXCESS_MIB over that, it inflates the balloon over the guest's free memory, less a
reserve, and lets it go again: the guest's balloon driver hands those pages to QEMU, which punches them out
of the memfd, and they return to the guest as free pages. The guest's page cache stays (the balloon takes
free pages only: the target leaves the reserve free). Measured by hand on a 1 GiB machine under TCG: 724 MiB
in 5.2 s (~140 MiB/s), RssShmem 1024 → 305 MiB, and it stayed there after the balloon was let go.

Everything is asked of QEMU's monitor (`info memdev`, `info balloon`, `balloon N`) and its /proc status, the
guest's free memory of its /proc/meminfo over the link. The balloon is always let go (full size) when a
give-back ends, fails or is cancelled (a saving stop cancels it before its quiesce), and at every link-up a
smaller balloon than the memory (a host agent killed while one was inflated) is let go.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .qemufwd import Monitor

log = logging.getLogger(__name__)
ENV = "PYMACHINE_MEMORY_BACK"  # "0": no give-back after a resume (bench/start.py A/B, debugging)
DELAY_S = 10.0  # after the link-up: a resume's own work (clock, remount, first requests) is done
EXCESS_MIB = 192  # QEMU holds this much more of the shared RAM than the guest uses: worth giving back
RESERVE_MIB = 256  # left free in the guest while the balloon is inflated (or a quarter of it, if more)
MIN_GIVE_MIB = 64  # less than this is not worth the guest's and QEMU's time
STALL_S = 3.0  # the balloon did not grow for this long: the guest has no more free pages to give
TIMEOUT_S = 60.0
_ACTUAL = re.compile(r"actual=(\d+)")
_BACKEND = re.compile(r"^memory backend:", re.M)


class GiveBackError(Exception):
    """The monitor or the guest did not answer as expected."""


@dataclass(frozen=True)
class Result:
    given_mib: int  # how far the balloon grew: what the guest handed back
    seconds: float
    reason: str  # why it ended: "reached", "stalled", "timeout", "cancelled"


def parse_actual(reply: str) -> int:
    """The balloon's size as `info balloon` says it: the guest's memory in MiB (QEMU's "actual")."""
    m = _ACTUAL.search(reply)
    if m is None:
        raise GiveBackError(f"no balloon in QEMU's answer: {reply.strip()!r}")
    return int(m.group(1))


def shared_memory_mib(reply: str) -> int | None:
    """The size of the guest's RAM in MiB when `info memdev` lists it as shared memory, else None."""
    total = 0
    for block in _BACKEND.split(reply)[1:]:
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()) if v
        )
        if fields.get("share") != "true":
            return None
        total += int(fields.get("size", "0")) >> 20
    return total or None


def meminfo_mib(meminfo: str, field: str) -> int:
    """A field of a /proc/meminfo, in MiB (MemFree: the pages the balloon can take without the guest
    reclaiming any)."""
    for line in meminfo.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) >> 10
    raise GiveBackError(f"no {field} in the guest's /proc/meminfo")


def rss_shmem_mib(pid: int) -> int:
    """The shared memory process `pid` has in the host's RAM (RssShmem), in MiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) >> 10
    raise GiveBackError(f"no RssShmem for process {pid}")


def machine_shmem(name: str) -> Callable[[], int]:
    """What machine `name`'s QEMU holds of shared memory, in MiB, asked each time (a restore is a new
    QEMU)."""

    def held() -> int:
        from .. import machines

        pid = machines.driver_for(machines.load_config(name)).pid(name)
        if pid is None:
            raise GiveBackError(f"no QEMU process for machine '{name}'")
        return rss_shmem_mib(pid)

    return held


def target_mib(total_mib: int, free: int) -> int | None:
    """The balloon target that takes the guest's free memory less the reserve, or None: too little to give."""
    reserve = max(RESERVE_MIB, total_mib // 4)
    give = min(free, total_mib) - reserve  # the guest's word: more free than its memory takes no more
    if give < MIN_GIVE_MIB:
        return None
    return total_mib - give


class MemoryBack:
    """One machine's give-backs: scheduled after each resumed link-up, at most one at a time."""

    def __init__(
        self, monitor: Monitor, held_mib: Callable[[], int], emit: Callable[..., None] = lambda **kw: None
    ) -> None:
        self._monitor = monitor
        self._held_mib = held_mib  # QEMU's RssShmem (machine_shmem)
        self._emit = emit
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ask(self, command: str) -> str:
        try:
            return self._monitor(command)
        except Exception as exc:  # noqa: BLE001 - libvirt or QMP errors alike: the monitor is not there
            raise GiveBackError(f"QEMU monitor: {exc}") from exc

    # -- scheduling ----------------------------------------------------------------------------------------
    def after_link_up(self, meminfo: Callable[[], str], still: Callable[[], bool]) -> None:
        """In DELAY_S, give the free memory back if the RAM is shared and QEMU holds much more of it than the
        guest uses: `meminfo` reads the guest's /proc/meminfo, `still` says the moment is still right (the
        same link, not parked, not paused)."""
        if os.environ.get(ENV, "1") == "0":
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._cancel.clear()
            self._thread = threading.Thread(
                target=self._later, args=(meminfo, still), name="memory-back", daemon=True
            )
            self._thread.start()

    def cancel(self, timeout: float = 10.0) -> None:
        """Stop a give-back (waiting or running) and let the balloon go before returning: a saving stop must
        not save a guest with an inflated balloon."""
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _later(self, meminfo: Callable[[], str], still: Callable[[], bool]) -> None:
        if self._cancel.wait(DELAY_S) or not still():
            return
        try:
            total = shared_memory_mib(self._ask("info memdev"))
            if total is None:
                return  # private memory: the restore mapped the zero page, nothing to give back
            info = meminfo()
            free = meminfo_mib(info, "MemFree")
            if self._held_mib() - (meminfo_mib(info, "MemTotal") - free) < EXCESS_MIB:
                return  # a cold boot's RAM: free page reporting already gave the free pages back
            target = target_mib(total, free)
            if target is None or self._cancel.is_set() or not still():
                return
            result = self.give_back(total, target)
        except Exception as exc:  # noqa: BLE001 - the link or the monitor failed: nothing is lost but memory
            log.warning("memory back to the host after the resume: %s", exc)
            self._emit(action="give-back", ok=False, error=str(exc))
            return
        log.info(
            "gave %d MiB of the guest's free memory back to the host in %.1f s (%s)",
            result.given_mib,
            result.seconds,
            result.reason,
        )
        self._emit(action="give-back", ok=True, mib=result.given_mib, seconds=round(result.seconds, 1),
                   reason=result.reason)  # fmt: skip

    # -- the balloon ---------------------------------------------------------------------------------------
    def give_back(self, total_mib: int, target: int, poll_s: float = 0.25) -> Result:
        """Inflate the balloon to `target` MiB, wait until it is there (or stalls, or the time is up, or a
        cancel), then let it go. Returns how far it got."""
        start = time.monotonic()
        begun = parse_actual(self._ask("info balloon"))
        reached, reason = begun, "timeout"
        try:
            self._ask(f"balloon {target}")
            grew_at = time.monotonic()
            while time.monotonic() - start < TIMEOUT_S:
                if self._cancel.wait(poll_s):
                    reason = "cancelled"
                    break
                now = parse_actual(self._ask("info balloon"))
                if now < reached:
                    reached, grew_at = now, time.monotonic()
                if reached <= target:
                    reason = "reached"
                    break
                if time.monotonic() - grew_at > STALL_S:
                    reason = "stalled"
                    break
        finally:
            self.let_go(total_mib)
        return Result(max(0, begun - reached), time.monotonic() - start, reason)

    def let_go(self, total_mib: int | None = None) -> bool:
        """The balloon back to the full memory; True when it was smaller (something had inflated it)."""
        if total_mib is None:
            total_mib = shared_memory_mib(self._ask("info memdev"))
            if total_mib is None:
                return False
        if parse_actual(self._ask("info balloon")) >= total_mib:
            return False
        self._ask(f"balloon {total_mib}")
        return True
