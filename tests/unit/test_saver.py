"""The resource saver's decisions and races (hostvm/hostagent/idle.py), with a fake hypervisor that records
pause/unpause calls; the real pause and wake-up paths are proven on a booted VM (tests/vm/test_saver_vm.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pymachine.hostvm.hostagent import idle
from pymachine.hostvm.hostagent.transport import Link


class FakeVM:
    """Records calls; `pause_gate` holds the driver's pause call open (a wake arrives meanwhile)."""

    def __init__(self) -> None:
        self.is_paused = False
        self.calls: list[str] = []
        self.pause_gate = threading.Event()
        self.pause_gate.set()
        self.pausing = threading.Event()
        self.activity = idle.GuestActivity(containers=0, ssh_sessions=0)
        self.probe_gate = threading.Event()
        self.probe_gate.set()
        self.probing = threading.Event()

    def pause(self) -> None:
        self.pausing.set()
        assert self.pause_gate.wait(5)
        self.calls.append("pause")
        self.is_paused = True

    def unpause(self) -> None:
        self.calls.append("unpause")
        self.is_paused = False

    def probe(self) -> idle.GuestActivity:
        self.probing.set()
        assert self.probe_gate.wait(5)
        return self.activity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def saver(vm: FakeVM | None = None, timeout: float = 60, clock: Clock | None = None) -> idle.Saver:
    vm = vm or FakeVM()
    return idle.Saver(
        timeout,
        pause=vm.pause,
        unpause=vm.unpause,
        is_paused=lambda: vm.is_paused,
        probe=vm.probe,
        clock=clock or Clock(),
    )


def _held_client(s: Any) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A client thread (not started) that holds an engine-socket connection until `leave` is set."""
    entered, leave = threading.Event(), threading.Event()

    def client() -> None:
        with s.connection("engine socket"):
            entered.set()
            leave.wait(5)

    return threading.Thread(target=client), entered, leave


def test_timeout_comes_from_minutes_or_the_seconds_override() -> None:
    assert idle.timeout_seconds(5, {}) == 300
    assert idle.timeout_seconds(0, {}) == 0
    assert idle.timeout_seconds(5, {idle.ENV_SECONDS: "3"}) == 3
    assert idle.timeout_seconds(5, {idle.ENV_SECONDS: "soon"}) == 300  # ignored, with a warning


def test_ssh_connections_counts_established_sessions_on_port_22_only() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0F02000A:0016 0202000A:C350 01 00000000:00000000\n"  # established to :22
        "   1: 0F02000A:0016 0202000A:C351 01 00000000:00000000\n"
        "   2: 0F02000A:0016 0202000A:C352 06 00000000:00000000\n"  # TIME_WAIT
        "   3: 00000000:0016 00000000:0000 0A 00000000:00000000\n"  # the listener
        "   4: 0100007F:1F90 0100007F:D000 01 00000000:00000000\n"  # another port
    )
    assert idle.ssh_connections(text) == 2


def test_pauses_only_after_the_timeout_and_only_when_the_guest_is_idle() -> None:
    vm, clock = FakeVM(), Clock()
    s = saver(vm, timeout=60, clock=clock)
    clock.now += 59
    assert not s.due()
    clock.now += 2
    assert s.due()
    vm.activity = idle.GuestActivity(containers=1, ssh_sessions=0)
    assert not s.pause_now("idle", check_guest=True)
    assert vm.calls == [] and s.last_busy == "1 running container(s)"
    assert not s.due()  # the idle window starts again from the busy answer
    vm.activity = idle.GuestActivity(containers=0, ssh_sessions=0)
    clock.now += 61
    assert s.pause_now("idle", check_guest=True)
    assert vm.calls == ["pause"] and s.snapshot()["state"] == "paused"


def test_an_open_connection_keeps_it_awake_and_a_new_one_wakes_it() -> None:
    vm, clock = FakeVM(), Clock()
    s = saver(vm, timeout=60, clock=clock)
    with s.connection("engine socket"):
        clock.now += 600
        assert not s.due()
        assert not s.pause_now("idle", check_guest=True)
    assert vm.calls == []
    clock.now += 61
    assert s.pause_now("idle")
    with s.connection("engine socket"):
        assert vm.calls == ["pause", "unpause"] and not s.paused
    assert s.wakes == 1


def test_concurrent_first_connections_resume_once_and_none_proceeds_while_paused() -> None:
    vm = FakeVM()
    s = saver(vm)
    assert s.pause_now("test")
    seen: list[bool] = []

    def client() -> None:
        with s.connection("port 8080"):
            seen.append(vm.is_paused)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert seen == [False] * 16
    assert vm.calls == ["pause", "unpause"]


def test_a_connection_during_the_driver_pause_waits_for_it_then_resumes() -> None:
    vm = FakeVM()
    s = saver(vm)
    vm.pause_gate.clear()
    pauser = threading.Thread(target=s.pause_now, args=("idle",), kwargs={"force": True})
    pauser.start()
    assert vm.pausing.wait(5)  # the driver is pausing right now
    got: list[bool] = []
    client = threading.Thread(target=lambda: got.append(s.wake("engine socket") >= 0 and vm.is_paused))
    client.start()
    time.sleep(0.2)
    assert client.is_alive()  # waits for the pause to finish rather than racing past it
    vm.pause_gate.set()
    pauser.join(5)
    client.join(5)
    assert vm.calls == ["pause", "unpause"] and got == [False]


def test_a_connection_during_the_guest_probe_cancels_the_pause() -> None:
    vm, clock = FakeVM(), Clock()
    s = saver(vm, timeout=1, clock=clock)
    clock.now += 5
    vm.probe_gate.clear()
    result: list[bool] = []
    pauser = threading.Thread(target=lambda: result.append(s.pause_now("idle", check_guest=True)))
    pauser.start()
    assert vm.probing.wait(5)
    c, entered, leave = _held_client(s)
    c.start()
    time.sleep(0.1)
    vm.probe_gate.set()  # the guest says "idle", but a client is connecting
    pauser.join(5)
    assert entered.wait(5)
    leave.set()
    c.join(5)
    assert result == [False] and vm.calls == []


def test_a_failed_resume_fails_the_connection_rather_than_hanging_it() -> None:
    vm = FakeVM()
    s = saver(vm)
    assert s.pause_now("test")

    def broken() -> None:
        raise OSError("QMP socket gone")

    s._unpause = broken
    with pytest.raises(OSError), s.connection("engine socket"):
        pass
    assert "could not resume" in (s.snapshot()["last_error"] or "")
    assert s.active == 0


def test_start_resumes_a_machine_a_dead_agent_left_paused() -> None:
    vm = FakeVM()
    vm.is_paused = True
    s = saver(vm, timeout=0)
    s.start()
    s.stop()
    assert vm.calls == ["unpause"] and not s.paused


def test_the_link_does_not_call_a_paused_guest_dead() -> None:
    """A keep-alive in flight when the guest is paused gets no answer; while held, that is no fault."""
    answered = threading.Event()

    class SilentTransport:
        def is_active(self) -> bool:
            return True

        def global_request(self, kind: str, wait: bool = True) -> None:
            answered.wait(10)  # the paused guest answers only after the resume

    link = Link(lambda: SilentTransport(), probe_timeout=0.3)  # type: ignore[arg-type, return-value]
    assert not link._probe(SilentTransport())  # type: ignore[arg-type]  # silence without a pause: dead
    link.hold()
    assert link._probe(SilentTransport())  # type: ignore[arg-type]
    link.release()
    answered.set()


# -- the setting and how list shows it ----------------------------------------------------------------------
def test_idle_suspend_setting_defaults_validates_and_reads_old_configs() -> None:
    from pymachine.hostvm import config
    from pymachine.hostvm.errors import UsageError

    host = dict(ncpus_host=4, fallback_driver="qemu", home_mount=False)
    assert config.build(**host).idle_suspend == 5.0
    assert config.build(**host, idle_suspend="0").idle_suspend == 0.0
    assert config.build(**host, idle_suspend="0.5").idle_suspend == 0.5
    for bad in ("soon", "-1", "nan", "99999"):
        with pytest.raises(UsageError, match="idle_suspend"):
            config.build(**host, idle_suspend=bad)
    old = {"name": "x", "cpus": 1, "memory": 1 << 30, "disk": 8 << 30, "driver": "qemu"}
    assert config.MachineConfig.from_json(old).idle_suspend == 5.0  # a config.json from before the saver


def test_list_shows_a_paused_machine_as_running_idle_paused() -> None:
    from pymachine.app.cli.machine_cmd import list_json, list_rows
    from pymachine.hostvm.machines import Machine

    m = Machine(
        "dev", "running", 2, 1 << 30, 8 << 30, 40022, "tcg", "qemu", "qemu (direct)", 1, "/x", "/c", "h"
    )
    status = {
        "running": True,
        "state": "ready",
        "link": {"state": "up"},
        "forwards": [],
        "saver": {"state": "paused"},
    }
    assert list_rows([(m, status)])[1][1] == "running (idle, paused)"
    assert list_json(m, status)["state"] == "running (idle, paused)"
    status["saver"] = {"state": "awake"}
    assert list_rows([(m, status)])[1][1] == "running"


def test_control_ops() -> None:
    vm = FakeVM()
    s = saver(vm, timeout=300)
    assert idle.control(None, {"op": "wake"})["ok"]  # a machine without a saver is awake: nothing to do
    assert not idle.control(None, {"op": "pause"})["ok"]
    assert idle.control(s, {"op": "saver", "timeout_s": 3})["saver"]["timeout_s"] == 3
    assert idle.control(s, {"op": "pause"})["saver"]["state"] == "paused"
    assert idle.control(s, {"op": "wake", "reason": "pymachine ssh"})["ok"] and not vm.is_paused
    assert vm.calls == ["pause", "unpause"]


def test_a_connection_during_the_trim_cancels_the_pause() -> None:
    vm = FakeVM()
    released: list[float] = []
    s = saver(vm, timeout=1)
    s._after_unpause = released.append
    c, entered, leave = _held_client(s)

    def trim_while_a_client_arrives() -> None:
        c.start()
        time.sleep(0.2)  # the client has counted itself and waits for the saver's lock

    s._before_pause = trim_while_a_client_arrives
    assert not s.pause_now("idle")
    assert entered.wait(5)
    leave.set()
    c.join(5)
    assert vm.calls == [] and released == [0.0]  # the link's probes were released again
