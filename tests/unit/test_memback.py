"""The host agent's give-back of a resumed guest's free memory (hostagent/memback.py): QEMU's monitor
answers parsed as QEMU 7.2 prints them, the balloon target, and the balloon always let go (reached, stalled,
cancelled, a monitor that fails). The monitor here is a fake balloon; tests/vm/test_resume_vm.py runs the
real one."""

from __future__ import annotations

import threading
import time

import pytest

from pymachine.hostvm.hostagent import memback

MEMDEV_SHARED = """memory backend: pc.ram
  size:  1073741824
  merge: true
  dump: false
  prealloc: false
  share: true
  reserve: true
  policy: default
  host nodes: \n
"""
MEMINFO = "MemTotal:         995300 kB\nMemFree:          867392 kB\nMemAvailable:     821276 kB\n"


class Balloon:
    """QEMU's balloon as the monitor shows it: the guest gives `rate` MiB per look until `floor` (its free
    memory) or the target."""

    def __init__(self, total: int = 1024, rate: int = 100, floor: int = 0, shared: bool = True) -> None:
        self.total, self.actual, self.target = total, total, total
        self.rate, self.floor, self.shared = rate, floor, shared
        self.commands: list[str] = []
        self.fail_after: int | None = None

    def __call__(self, command: str) -> str:
        self.commands.append(command)
        if self.fail_after is not None and len(self.commands) > self.fail_after:
            raise OSError("the monitor socket closed")
        if command == "info memdev":
            text = MEMDEV_SHARED.replace("1073741824", str(self.total << 20))
            return text if self.shared else text.replace("share: true", "share: false")
        if command == "info balloon":
            if self.target < self.actual:
                self.actual = max(self.target, self.floor, self.actual - self.rate)
            else:
                self.actual = self.target
            return f"balloon: actual={self.actual}\r\n"
        if command.startswith("balloon "):
            self.target = int(command.split()[1])
            return ""
        raise AssertionError(command)


def test_qemu_s_answers_are_read_as_qemu_7_2_prints_them() -> None:
    assert memback.parse_actual("balloon: actual=1024\r\n") == 1024
    with pytest.raises(memback.GiveBackError):
        memback.parse_actual("Error: No balloon device has been activated")
    assert memback.shared_memory_mib(MEMDEV_SHARED) == 1024
    assert memback.shared_memory_mib(MEMDEV_SHARED.replace("share: true", "share: false")) is None
    assert memback.shared_memory_mib("") is None
    assert memback.meminfo_mib(MEMINFO, "MemFree") == 847
    assert memback.meminfo_mib(MEMINFO, "MemTotal") == 971
    with pytest.raises(memback.GiveBackError):
        memback.meminfo_mib("MemTotal: 1 kB\n", "MemFree")


def test_the_target_leaves_a_reserve_free_and_skips_a_small_gain() -> None:
    assert memback.target_mib(1024, 847) == 1024 - (847 - 256)
    assert memback.target_mib(4096, 3000) == 4096 - (3000 - 1024)  # a quarter of a bigger machine
    assert memback.target_mib(1024, 300) is None  # 44 MiB over the reserve: not worth it
    # a guest's /proc/meminfo is the guest's to write: one that claims more free memory than it has still
    # keeps the reserve, and no target goes below it
    assert memback.target_mib(1024, 10**9) == 256


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memback, "STALL_S", 0.2)
    monkeypatch.setattr(memback, "DELAY_S", 0.05)


def test_a_give_back_reaches_its_target_then_lets_the_balloon_go() -> None:
    balloon = Balloon(rate=150)
    result = memback.MemoryBack(balloon, lambda: 1024).give_back(1024, 433, poll_s=0.001)
    assert (result.reason, result.given_mib) == ("reached", 1024 - 433)
    assert balloon.commands[-1] == "balloon 1024" and balloon.target == 1024


def test_a_guest_with_less_free_memory_stalls_and_still_gets_its_memory_back() -> None:
    balloon = Balloon(rate=150, floor=700)
    result = memback.MemoryBack(balloon, lambda: 1024).give_back(1024, 433, poll_s=0.001)
    assert (result.reason, result.given_mib) == ("stalled", 324)
    assert balloon.target == 1024


def test_a_monitor_that_fails_mid_way_is_reported_and_the_balloon_is_let_go_when_it_answers_again() -> None:
    balloon = Balloon(rate=10)
    balloon.fail_after = 4
    emitted: list[dict] = []
    back = memback.MemoryBack(balloon, lambda: 1024, lambda **kw: emitted.append(kw))
    back.after_link_up(lambda: MEMINFO, lambda: True)
    back._thread.join(5)  # type: ignore[union-attr]
    assert emitted and emitted[-1]["ok"] is False and "monitor" in emitted[-1]["error"]
    assert balloon.target < 1024  # inflated, and the monitor gone: the next link-up lets it go
    balloon.fail_after = None
    assert back.let_go() is True and balloon.target == 1024
    assert back.let_go() is False  # nothing left to let go


def test_a_saving_stop_cancels_a_give_back_and_finds_the_balloon_let_go() -> None:
    balloon = Balloon(rate=1)  # slow: the cancel comes mid-way
    emitted: list[dict] = []
    back = memback.MemoryBack(balloon, lambda: 1024, lambda **kw: emitted.append(kw))
    back.after_link_up(lambda: MEMINFO, lambda: True)
    deadline = time.monotonic() + 5
    while not any(c.startswith("balloon 4") for c in balloon.commands) and time.monotonic() < deadline:
        time.sleep(0.01)
    back.cancel()
    assert balloon.target == 1024 and balloon.commands[-1] == "balloon 1024"
    assert emitted[-1]["reason"] == "cancelled" and emitted[-1]["ok"] is True


def test_nothing_is_asked_of_private_memory_a_moved_on_link_or_with_the_switch_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private = Balloon(shared=False)
    back = memback.MemoryBack(private, lambda: 1024)
    back.after_link_up(lambda: MEMINFO, lambda: True)
    back._thread.join(5)  # type: ignore[union-attr]
    assert private.commands == ["info memdev"]

    gone = Balloon()
    back = memback.MemoryBack(gone, lambda: 1024)
    back.after_link_up(lambda: MEMINFO, lambda: False)  # another link, parked or paused by the saver
    back._thread.join(5)  # type: ignore[union-attr]
    assert gone.commands == []

    monkeypatch.setenv(memback.ENV, "0")
    off = Balloon()
    back = memback.MemoryBack(off, lambda: 1024)
    back.after_link_up(lambda: MEMINFO, lambda: True)
    assert back._thread is None


def test_a_cancel_while_waiting_asks_nothing() -> None:
    balloon = Balloon()
    back = memback.MemoryBack(balloon, lambda: 1024)
    gate = threading.Event()
    back.after_link_up(lambda: (gate.set(), MEMINFO)[1], lambda: True)
    back.cancel()
    assert not gate.is_set() and balloon.commands == []


def test_shared_memory_that_holds_no_more_than_the_guest_uses_is_left_alone() -> None:
    """A cold boot's memfd: free page reporting gave the free pages back already; only a restore's leaves
    QEMU holding much more than the guest uses (971 - 847 = 124 MiB used here)."""
    balloon = Balloon()
    back = memback.MemoryBack(balloon, lambda: 124 + memback.EXCESS_MIB - 1)
    back.after_link_up(lambda: MEMINFO, lambda: True)
    back._thread.join(5)  # type: ignore[union-attr]
    assert balloon.commands == ["info memdev"]
    back = memback.MemoryBack(balloon, lambda: 124 + memback.EXCESS_MIB)
    back.after_link_up(lambda: MEMINFO, lambda: True)
    back._thread.join(5)  # type: ignore[union-attr]
    assert "balloon 433" in balloon.commands and balloon.target == 1024


def test_qemu_s_shared_memory_is_read_from_its_proc_status() -> None:
    """As QEMU's memfd counts: 16 MiB of a shared memfd mapped and touched here."""
    import mmap
    import os

    before = memback.rss_shmem_mib(os.getpid())
    fd = os.memfd_create("memback-test")
    try:
        os.ftruncate(fd, 16 << 20)
        with mmap.mmap(fd, 16 << 20, mmap.MAP_SHARED) as mem:
            mem.write(b"x" * (16 << 20))
            assert memback.rss_shmem_mib(os.getpid()) >= before + 15
    finally:
        os.close(fd)


def test_a_host_agent_that_stops_mid_give_back_lets_the_balloon_go(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`pymachine stop --shutdown`, `delete` or a SIGTERM stop the agent while the guest may run on: it must
    not be left with an inflated balloon."""
    from pymachine.hostvm.hostagent.daemon import Agent

    def no_link():  # type: ignore[no-untyped-def]
        raise OSError("no SSH in this test")

    balloon = Balloon(rate=1)
    agent = Agent("t", no_link, machine_dir=tmp_path)
    agent.memback = memback.MemoryBack(balloon, lambda: 1024)
    agent.start()
    agent.memback.after_link_up(lambda: MEMINFO, lambda: True)
    deadline = time.monotonic() + 5
    while "balloon 433" not in balloon.commands and time.monotonic() < deadline:
        time.sleep(0.01)
    assert balloon.target == 433
    agent.stop()
    assert balloon.target == 1024 and balloon.commands[-1] == "balloon 1024"
