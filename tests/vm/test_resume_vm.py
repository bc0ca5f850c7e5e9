"""`pymachine stop` saves the machine's state and `start` resumes it (savestate.py), on both drivers.

One machine per driver for the whole file; the tests run in order on it: resume with a running container,
a config change (cold boot, reason shown), a damaged state file (cold boot), kill -9 of QEMU in the middle
of a save (the next start boots cold and works), `start --cold`, and `stop --shutdown` last (no start after
it). The libvirt machine shares a folder over virtiofs (unplugged around the save); the direct-QEMU one over
sshfs (it rides the SSH link; the host agent mounts it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostagent_vm import SHARED_CACHE, VmMachine, env_of, free_port, http_status, wait_for
from support.machines import ensure_libvirtd, new_home, unique_name
from support.poll import until

# The guest kernel has no 9p; the direct-QEMU driver cannot unplug virtiofs devices (see the last test).
TRANSPORT = {"libvirt": "virtiofs", "qemu": "sshfs"}
FSTYPE = {"virtiofs": "virtiofs", "sshfs": "fuse.sshfs"}


@pytest.fixture(scope="module", params=sorted(TRANSPORT))
def saved_vm(request: pytest.FixtureRequest) -> Iterator[VmMachine]:
    """A started machine of the driver in `param`, sharing one host folder, with busybox loaded."""
    from support.agent import busybox_tarball

    driver = request.param
    if driver == "libvirt":
        ensure_libvirtd()
    home = new_home()
    share = Path(home) / "share"
    share.mkdir()
    env = dict(os.environ)
    env.update(PYMACHINE_HOME=str(home), PYMACHINE_CACHE=str(SHARED_CACHE), DOCKER_CONFIG=str(home / "dc"))
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    machine = VmMachine(unique_name("rs"), home, env)
    machine.share = share  # type: ignore[attr-defined]
    machine.driver = driver  # type: ignore[attr-defined]
    try:
        with env_of(machine):
            from pymachine.hostvm import machines

            machines.create(
                machine.name,
                driver=driver,
                mounts=[str(share)],
                home_mount=False,
                share_transport=TRANSPORT[driver],
            )
            machines.start(machine.name, lambda m: print(m, file=sys.stderr))
        machine.docker("load", "-i", str(busybox_tarball()))
        yield machine
    finally:
        with env_of(machine), contextlib.suppress(Exception):
            from pymachine.hostvm import machines

            machines.delete(machine.name, force=True)
        shutil.rmtree(home, ignore_errors=True)


def machine_dir(vm: VmMachine) -> Path:
    return vm.home / "m" / vm.name


def started_at(vm: VmMachine, container: str) -> tuple[int, str]:
    state = json.loads(vm.docker("inspect", "-f", "{{json .State}}", container).stdout)
    assert state["Running"], state
    return state["Pid"], state["StartedAt"]


def host_agent(vm: VmMachine) -> int | None:
    with env_of(vm):
        from pymachine.hostvm.hostagent import launcher

        return launcher.agent_pid(vm.name)


def boot_id(vm: VmMachine) -> str:
    """The kernel's id of this boot: kept across a save and resume, new at every boot."""
    status, out, _ = vm.ssh("cat /proc/sys/kernel/random/boot_id")
    assert status == 0
    return out.decode().strip()


def test_stop_saves_and_start_resumes_with_the_container_running(saved_vm: VmMachine) -> None:
    vm = saved_vm
    port = free_port()
    vm.docker(
        "run", "-d", "--name", "web", "-p", f"{port}:80", "pymachine/busybox", "httpd", "-f", "-p", "80"
    )
    assert http_status(port) == 404
    before = started_at(vm, "web")
    booted = boot_id(vm)
    agent = host_agent(vm)

    stop = vm.pymachine("stop", vm.name)
    assert "saved machine state" in stop.stderr + stop.stdout, stop
    assert (machine_dir(vm) / "saved.vmstate").exists()
    inspect = json.loads(vm.pymachine("inspect", vm.name).stdout)
    assert inspect["state"] == "saved" and inspect["saved_state"]["size"] > 0
    # the host agent stays, parked: the engine socket tells a client why, at once (hostagent/parking.py)
    assert host_agent(vm) == agent
    ps = vm.docker("ps", check=False, timeout=30)
    assert ps.returncode != 0 and "is stopped (its state is saved)" in ps.stderr, ps

    (vm.share / "written-while-saved").write_text("hello")  # type: ignore[attr-defined]
    start = vm.pymachine("start", vm.name)
    out = start.stderr + start.stdout
    assert "resuming from the saved state" in out and "cold boot" not in out, out
    assert not (machine_dir(vm) / "saved.vmstate").exists()  # used once

    assert host_agent(vm) == agent  # reconnected, not restarted
    assert started_at(vm, "web") == before  # the same process, never restarted
    assert http_status(port) == 404  # the published port answers
    assert vm.docker("ps", "-q").stdout.split()  # the engine socket answers
    assert boot_id(vm) == booted  # no reboot
    # the share is mounted again, over its own transport, and shows what the host wrote meanwhile
    status, text, _ = vm.ssh(f"cat {vm.share}/written-while-saved")  # type: ignore[attr-defined]
    assert (status, text) == (0, b"hello")
    status, fstype, _ = vm.ssh(f"findmnt -rn -o FSTYPE -M {vm.share}")  # type: ignore[attr-defined]
    assert fstype.decode().strip() == FSTYPE[TRANSPORT[vm.driver]]  # type: ignore[attr-defined]
    if fstype.decode().strip() == "virtiofs":  # a device share: unplugged for the save, mounted again
        # with the 4 MiB readahead the init gives it at boot
        status, kb, _ = vm.ssh(f"cat /sys/class/bdi/$(mountpoint -d {vm.share})/read_ahead_kb")  # type: ignore[attr-defined]
        assert (status, kb.strip()) == (0, b"4096")
        # as the init mounts it at boot: its own device, nosuid,nodev
        status, opts, _ = vm.ssh(f"findmnt -rn -o SOURCE,OPTIONS -M {vm.share}")  # type: ignore[attr-defined]
        source, options = opts.decode().split()
        assert source.startswith("pm") and {"nosuid", "nodev", "rw"} <= set(options.split(","))
        # by the guest agent, asked over the parked host agent's link: no SSH connection of `start`'s own,
        # no script (devshares.py)
        log = (machine_dir(vm) / "ha.log").read_text()
        assert f"the guest agent mounted the shares again: {{'{vm.share}': None}}" in log  # type: ignore[attr-defined]
        assert "ran a script in the guest for a client" not in log
        # and the stop's unmount was the guest agent's too (devshares.quiesce)
        assert "the guest agent unmounted the shares for the save: done" in log
    # the clock was stepped to the host's at once
    status, guest_now, _ = vm.ssh("date +%s")
    assert abs(int(guest_now) - time.time()) < 5


def monitor(vm: VmMachine, command: str) -> str:
    with env_of(vm):
        from pymachine.hostvm import machines

        return machines.driver_for(machines.load_config(vm.name)).monitor_command(vm.name, command)


def qemu_shmem_mib(vm: VmMachine) -> int:
    """QEMU's shared memory in the host's RAM (the guest's RAM where it is a memfd), in MiB."""
    with env_of(vm):
        from pymachine.hostvm.hostagent import memback

        return memback.machine_shmem(vm.name)()


def memory_events(vm: VmMachine, since: float = 0.0) -> list[dict]:
    """The host agent's memory events from `since` on (time.time()): a give-back an earlier resume began may
    end, cancelled by a stop, after a test took its count."""
    lines = (machine_dir(vm) / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("type") == "memory" and e["ts"] >= since]


def memtotal_mib(vm: VmMachine, full: int) -> int:
    """The guest's MemTotal with the balloon let go (without `autodeflate` an inflated balloon lowers it),
    read between two looks at the balloon: an earlier test's resume may be giving memory back
    (memback.DELAY_S after its link-up)."""
    for _ in range(5):
        until(lambda: balloon_mib(vm) == full, 120, "an earlier give-back to let the balloon go")
        total = int(vm.ssh("awk '/MemTotal/ {print $2}' /proc/meminfo")[1]) >> 10
        if balloon_mib(vm) == full:
            return total
    raise AssertionError("the balloon kept inflating")


def balloon_mib(vm: VmMachine) -> int:
    from pymachine.hostvm.hostagent import memback

    return memback.parse_actual(monitor(vm, "info balloon"))


def memory_mib(vm: VmMachine) -> int:
    with env_of(vm):
        from pymachine.hostvm import machines

        return machines.load_config(vm.name).memory >> 20


def test_a_resumed_machine_gives_its_free_memory_back_to_the_host(saved_vm: VmMachine) -> None:
    """A restore into shared memory (virtiofs: the libvirt machine) allocates the guest's free pages too, and
    the guest does not report them again: the host agent gives them back with the balloon (memback.py) and
    lets it go. A stop in the middle of a give-back saves a guest with all its memory. A machine with private
    memory (the direct-QEMU one) is left alone."""
    vm = saved_vm
    shared = vm.driver == "libvirt"  # type: ignore[attr-defined]
    full = memory_mib(vm)
    total = memtotal_mib(vm, full)
    vm.pymachine("stop", vm.name)
    since = time.time()
    vm.pymachine("start", vm.name)
    if not shared:
        time.sleep(memback_delay() + 10)
        assert memory_events(vm, since) == [] and balloon_mib(vm) == full
        return
    wait_for(lambda: memory_events(vm, since), "the give-back after the resume", 120)
    event = memory_events(vm, since)[0]
    assert event["action"] == "give-back" and event["ok"] is True, event
    assert event["mib"] >= 256, event  # an idle 1 GiB guest has ~800 MiB free; 256 stay free meanwhile
    assert qemu_shmem_mib(vm) <= full - event["mib"] + 160, (qemu_shmem_mib(vm), event)
    until(lambda: balloon_mib(vm) == full, 60, "the balloon let go")  # the guest has all its memory again
    assert int(vm.ssh("awk '/MemTotal/ {print $2}' /proc/meminfo")[1]) >> 10 == total

    # a stop while the balloon is inflated: the save waits for it to be let go
    vm.pymachine("stop", vm.name)
    since = time.time()
    vm.pymachine("start", vm.name)
    until(lambda: balloon_mib(vm) < full, 120, "the balloon to inflate", every=0.05)
    stop = vm.pymachine("stop", vm.name)
    assert "saved machine state" in stop.stdout + stop.stderr, stop
    assert memory_events(vm, since)[0]["reason"] in ("cancelled", "reached"), memory_events(vm, since)
    vm.pymachine("start", vm.name)
    until(lambda: balloon_mib(vm) == full, 60, "the balloon let go after the resume")
    assert int(vm.ssh("awk '/MemTotal/ {print $2}' /proc/meminfo")[1]) >> 10 == total
    status, free, _ = vm.ssh("awk '/MemFree/ {print $2}' /proc/meminfo")
    assert status == 0 and int(free) >> 10 > 512  # the guest's free memory came back with the balloon

    # a resume whose host agent is started for it (none was parked: the host restarted meanwhile)
    vm.pymachine("stop", vm.name)
    with env_of(vm):
        from pymachine.hostvm.hostagent import launcher

        launcher.stop(vm.name)
    since = time.time()
    vm.pymachine("start", vm.name)
    wait_for(lambda: memory_events(vm, since), "the give-back by a new host agent", 120)
    assert memory_events(vm, since)[0]["ok"] is True and memory_events(vm, since)[0]["mib"] >= 256


def test_a_guest_short_of_memory_takes_it_back_from_an_inflated_balloon(saved_vm: VmMachine) -> None:
    """While a give-back holds the balloon inflated (a few seconds after each resume), a container may need
    more than the reserve left beside it: the balloon deflates on the guest's OOM path (libvirt `autodeflate`,
    QEMU `deflate-on-oom`) instead of the guest's OOM killer taking a process."""
    vm = saved_vm
    full = memory_mib(vm)
    memtotal_mib(vm, full)  # no give-back of an earlier resume in flight
    monitor(vm, f"balloon {full // 4}")
    try:
        until(lambda: balloon_mib(vm) <= full // 4 + 16, 120, "the balloon to inflate")
        assert int(vm.ssh("awk '/MemFree/ {print $2}' /proc/meminfo")[1]) >> 10 < 200
        # 400 MiB written (every page touched) where the guest had under 200 MiB free
        status, out, err = vm.ssh(
            "python3 -c \"b = bytearray(b'x') * (400 << 20); print('allocated', len(b))\""
        )
        assert status == 0 and out.split() == [b"allocated", str(400 << 20).encode()], (status, out, err)
        assert balloon_mib(vm) > full // 4 + 128, monitor(vm, "info balloon")  # it gave the pages back
        status, out, _ = vm.ssh("dmesg | grep -ci 'out of memory' || true")
        assert out.strip() == b"0", vm.ssh("dmesg | tail -20")[1]  # and nothing was killed
    finally:
        monitor(vm, f"balloon {full}")
        until(lambda: balloon_mib(vm) == full, 120, "the balloon let go")


def memback_delay() -> float:
    from pymachine.hostvm.hostagent import memback

    return memback.DELAY_S


def test_a_config_change_boots_cold_and_says_why(saved_vm: VmMachine) -> None:
    vm = saved_vm
    booted = boot_id(vm)
    vm.pymachine("stop", vm.name)
    assert (machine_dir(vm) / "saved.json").exists()
    memory = json.loads((machine_dir(vm) / "config.json").read_text())["memory"]
    changed = vm.pymachine("set", vm.name, "--memory", str(memory + 256 * 2**20))  # as a person does
    assert "its saved state is discarded: the next start boots cold" in changed.stdout, changed
    start = vm.pymachine("start", vm.name)
    assert "cold boot: the machine's config changed" in start.stderr + start.stdout, start
    assert not (machine_dir(vm) / "saved.vmstate").exists()
    assert boot_id(vm) != booted
    assert vm.docker("ps", "-aq").stdout.split()  # the engine answers; the container exists (exited)


def test_a_damaged_state_boots_cold(saved_vm: VmMachine) -> None:
    vm = saved_vm
    booted = boot_id(vm)
    vm.pymachine("stop", vm.name)
    state = machine_dir(vm) / "saved.vmstate"
    size = state.stat().st_size
    with open(state, "r+b") as fh:  # same size, different bytes in the middle of guest RAM
        fh.seek(size // 2)
        fh.write(os.urandom(4096))
    start = vm.pymachine("start", vm.name)
    assert "cold boot: the saved state is damaged" in start.stderr + start.stdout, start
    assert vm.docker("ps", "-aq").returncode == 0
    assert boot_id(vm) != booted


def test_kill_9_of_qemu_during_a_save_leaves_a_machine_that_starts(saved_vm: VmMachine) -> None:
    vm = saved_vm
    with env_of(vm):
        from pymachine.hostvm import machines

        pid = machines.get(vm.name).pid
    assert pid
    part = machine_dir(vm) / "saved.vmstate.part"
    killed = threading.Event()

    def kill_when_the_save_writes() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if part.stat().st_size > 0:
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_when_the_save_writes, daemon=True)
    killer.start()
    stop = vm.pymachine("stop", vm.name, check=False)
    killer.join(5)
    assert killed.is_set(), "the save never started writing"
    assert "saving failed" in stop.stderr + stop.stdout or "shutting down instead" in stop.stderr, stop
    assert not (machine_dir(vm) / "saved.json").exists()
    start = vm.pymachine("start", vm.name)
    assert "resuming" not in start.stderr + start.stdout
    assert not part.exists()
    status, _, _ = vm.ssh("true")
    assert status == 0
    wait_for(lambda: vm.docker("ps", check=False).returncode == 0, "the engine socket to answer")


def test_start_cold_discards_the_saved_state(saved_vm: VmMachine) -> None:
    vm = saved_vm
    booted = boot_id(vm)
    vm.pymachine("stop", vm.name)
    assert (machine_dir(vm) / "saved.json").exists()
    start = vm.pymachine("start", "--cold", vm.name)
    assert "cold boot: asked for (--cold)" in start.stderr + start.stdout
    assert not (machine_dir(vm) / "saved.json").exists()
    assert boot_id(vm) != booted


def test_a_container_using_a_share_makes_stop_shut_down_instead(saved_vm: VmMachine) -> None:
    """Its bind mount of the virtiofs share would go stale if the device were unplugged: no save, a reason."""
    vm = saved_vm
    if TRANSPORT[vm.driver] != "virtiofs":  # type: ignore[attr-defined]
        pytest.skip("only device shares are unplugged around a save")
    share = vm.share  # type: ignore[attr-defined]
    vm.docker("run", "-d", "--name", "holder", "-v", f"{share}:/data", "pymachine/busybox", "sleep", "1000")
    stop = vm.pymachine("stop", vm.name)
    out = stop.stderr + stop.stdout
    assert "shutting down instead: saved state not possible: a container (pid" in out, out
    assert "is stopped" in stop.stdout and not (machine_dir(vm) / "saved.json").exists()
    vm.pymachine("start", vm.name)
    status, _, _ = vm.ssh(f"findmnt -rn -t virtiofs -M {share}")
    assert status == 0  # mounted by the cold boot as usual


def test_a_file_open_on_a_share_in_the_vm_makes_stop_shut_down_instead(saved_vm: VmMachine) -> None:
    """The guest agent's unmount (devshares.quiesce) meets a busy share: it leaves the shares mounted and the
    stop powers the machine off with the reason, as the script did."""
    vm = saved_vm
    if TRANSPORT[vm.driver] != "virtiofs":  # type: ignore[attr-defined]
        pytest.skip("only device shares are unplugged around a save")
    share = vm.share  # type: ignore[attr-defined]
    (share / "held").write_text("x")
    status, _, err = vm.ssh(f"setsid sh -c 'exec sleep 1000 <{share}/held' >/dev/null 2>&1 </dev/null &")
    assert status == 0, err
    stop = vm.pymachine("stop", vm.name)
    out = stop.stderr + stop.stdout
    assert f"shutting down instead: saved state not possible: {share} is busy in the VM" in out, out
    assert "is stopped" in stop.stdout and not (machine_dir(vm) / "saved.json").exists()
    vm.pymachine("start", vm.name)
    status, _, _ = vm.ssh(f"findmnt -rn -t virtiofs -M {share}")
    assert status == 0


def test_stop_shutdown_saves_nothing(saved_vm: VmMachine) -> None:
    """Last on the libvirt machine, and on the direct-QEMU one before the test below, whose `restart` starts
    it again: a power-off needs no start of its own here (a start after `stop --shutdown` boots cold, as
    test_machines.py's stop-then-start and the `restart` below prove)."""
    vm = saved_vm
    out = vm.pymachine("stop", "--shutdown", vm.name)
    assert "saved" not in out.stdout and not (machine_dir(vm) / "saved.json").exists()
    assert json.loads(vm.pymachine("inspect", vm.name).stdout)["state"] == "stopped"


def test_virtiofs_on_a_driver_that_cannot_unplug_it_shuts_down_with_the_reason(saved_vm: VmMachine) -> None:
    vm = saved_vm
    if vm.driver != "qemu":  # type: ignore[attr-defined]
        pytest.skip("the libvirt driver unplugs virtiofs devices")
    vm.pymachine("mount", "transport", vm.name, "virtiofs")
    vm.pymachine("restart", vm.name)
    stop = vm.pymachine("stop", vm.name)
    out = stop.stderr + stop.stdout
    assert "shutting down instead: saved state not possible with virtiofs shares on the qemu driver" in out, (
        out
    )
    assert not (machine_dir(vm) / "saved.json").exists()
