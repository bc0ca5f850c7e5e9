"""The fault suite's host-side faults on one booted machine (issue 16). Each test makes the fault happen, then
shows that the next command works and nothing is lost:

- kill -9 of the host agent during a curl loop to a published port: the port answers again with no pymachine
  command run in between (its supervisor restarts it);
- `pymachine image build --force` while a machine uses the image: refused, the base disk untouched;
- `pymachine create` killed half-way: the name can be created and deleted afterwards;
- a container fills the guest's disk: the engine answers, a load fails saying "no space left on device", the
  guest agent restarted on the full disk comes back with its containers, and `docker rm` frees the space;
- QEMU killed under a running machine: `stop` ends its host agent and supervisor; `delete` ends an agent of a
  stopped machine, and no agent is left to serve a machine created again under that name. (Last: it ends
  the machine's run.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from support.hostagent_vm import SHARED_CACHE, VmMachine, env_of, free_port, http_status, wait_for
from support.random_image import random_image_archive

HTTPD = ["pymachine/busybox", "httpd", "-f", "-p", "80", "-h", "/bin"]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmMachine]:
    from support.agent import busybox_tarball

    base = tmp_path_factory.mktemp("faults")
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env.update(
        PYMACHINE_HOME=str(base / "home"),
        PYMACHINE_CACHE=str(SHARED_CACHE),
        DOCKER_CONFIG=str(base / "docker-config"),
    )
    machine = VmMachine("faults", base / "home", env)
    with env_of(machine):
        from pymachine.hostvm import machines

        machines.create("faults", driver="qemu", home_mount=False, disk="2G")  # small: quick to fill
        try:
            machines.start("faults", lambda m: print(m, file=sys.stderr))
            machine.docker("load", "-i", str(busybox_tarball()))
            yield machine
        finally:
            with contextlib.suppress(Exception):
                machines.delete("faults", force=True)


def _outcome(port: int) -> str:
    """ "ok" for any HTTP answer (it proves the path host → host agent → guest → container), "refused", or
    "failed" (reset, timed out)."""
    try:
        return "ok" if http_status(port, timeout=2) > 0 else "failed"
    except Exception as exc:  # noqa: BLE001 - the port is down
        refused = isinstance(exc, ConnectionRefusedError) or isinstance(
            getattr(exc, "reason", None), ConnectionRefusedError
        )
        return "refused" if refused else "failed"


def _ok(port: int) -> bool:
    return _outcome(port) == "ok"


def test_kill_9_of_the_host_agent_during_a_curl_loop(vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    port = free_port()
    vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD)
    wait_for(lambda: _ok(port), "the published port")
    results: list[tuple[float, float, bool]] = []  # (sent, answered or failed, ok)
    refused: list[float] = []
    stop = threading.Event()

    def curl_loop() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            outcome = _outcome(port)
            results.append((sent, time.monotonic(), outcome == "ok"))
            if outcome == "refused":
                refused.append(sent)
            time.sleep(0.05)

    loop = threading.Thread(target=curl_loop, daemon=True)
    loop.start()
    with env_of(vm):
        pid = launcher.agent_pid(vm.name)
        assert pid is not None and launcher.supervisor_pid(vm.name) is not None
        time.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # no pymachine command from here on: only the curl loop and the clock
        back = wait_for(lambda: _back(list(results), killed_at), "the published port to answer again", 60)
        # a QEMU-path port (docs/hostagent.md) answers with no agent at all: wait for the supervisor's new one
        wait_for(lambda: launcher.agent_pid(vm.name) not in (None, pid), "the supervisor's new agent", 60)
        stop.set()
        loop.join(5)
        new = launcher.agent_pid(vm.name)
    assert new not in (None, pid)
    failed = sum(1 for sent, _, ok in results if sent > killed_at and not ok)
    print(
        f"published port answered again {back - killed_at:.2f} s after kill -9 of the host agent "
        f"({failed} requests failed meanwhile)"
    )
    # the supervisor holds the listener (handover.py): a request made while no agent runs waits, never refused
    assert not refused, f"{len(refused)} requests refused after the kill"
    vm.remove_all_containers()


def _back(results: list[tuple[float, float, bool]], since: float) -> float | None:
    """When the port answered a request sent after the kill. (It need not go down in between: the
    supervisor holds the listener, so a connection made while no agent runs waits for the next one.)"""
    return next((done for sent, done, ok in results if ok and sent > since), None)


def test_kill_9_of_the_host_agent_during_logs_follow(vm: VmMachine) -> None:
    """The client's `docker logs -f` stream ends (no hang) when the host agent dies under it; a new one works
    with no pymachine command run in between, and the log lost no line across the kill."""
    from pymachine.hostvm.hostagent import launcher

    vm.docker(
        "run", "-d", "--name", "ticker", "pymachine/busybox",
        "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    )  # fmt: skip
    follow = _follow(vm, "ticker")
    assert follow.stdout is not None
    first = [follow.stdout.readline() for _ in range(3)]
    assert all(line.startswith("tick ") for line in first), first
    with env_of(vm):
        pid = launcher.agent_pid(vm.name)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    try:
        follow.communicate(timeout=60)  # the stream ends: EOF from the dead agent, not a hang
    except subprocess.TimeoutExpired:
        follow.kill()
        pytest.fail("docker logs -f still hangs 60 s after its host agent was killed")
    # no pymachine command from here on, and no retry: the next client queues in the engine socket the
    # supervisor holds (handover.py) and the next agent serves it
    last_before = int(first[-1].split()[1])
    again = _follow(vm, "ticker")
    seen: list[int] = []

    def past_the_kill() -> bool:
        line = again.stdout.readline()  # type: ignore[union-attr]
        if not line:
            return True  # ended: said below
        seen.append(int(line.split()[1]))
        return seen[-1] > last_before + 5

    try:
        wait_for(past_the_kill, "lines written after the kill", 120)
        assert again.poll() is None, f"the new docker logs -f ended: {again.communicate(timeout=10)}"
    finally:
        again.kill()
        again.wait(10)
    assert seen == list(range(1, len(seen) + 1)), f"lines lost or reordered: {seen}"
    vm.docker("rm", "-f", "ticker")


def _follow(vm: VmMachine, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["docker", "--context", f"pymachine-{vm.name}", "logs", "-f", name],
        env=vm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Run in the guest: kill -9 the guest agent during a container's start, found by its marker: "spawned" as soon
# as any process not there before appears outside this script's own login (the container's supervisor, before
# its exec), "exec'd" as soon as the container's own process (`sleep MARKER`) exists.
_KILL_AT_START = """
import os, sys, time
marker, when = sys.argv[1].encode(), sys.argv[2]
def procs():
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        yield int(p), ppid, argv
ours = {os.getpid(), os.getppid()}
before = {pid for pid, _, _ in procs()}
def started():
    for pid, ppid, argv in procs():
        if when == "exec'd" and argv[:2] == [b"sleep", marker]:
            return True
        if when == "spawned" and pid not in before and pid not in ours and ppid not in ours:
            return True
    return False
print("armed", flush=True)
deadline = time.monotonic() + 120
while not started():
    if time.monotonic() > deadline:
        sys.exit("the container never started")
    time.sleep(0.001)
for pid, _, argv in procs():
    if b"pymachine_agent" in argv and b"serve" in argv:
        os.kill(pid, 9)
print("killed", flush=True)
"""


def _guest_cmdlines(vm: VmMachine, pids: list[str]) -> list[str]:
    """The command lines of guest processes `pids` (one SSH login for all: each costs a second under load)."""
    script = "; ".join(f"tr '\\0' ' ' < /proc/{pid}/cmdline; echo" for pid in pids)
    code, out, _ = vm.ssh(script)
    assert code == 0 or not pids
    return out.decode().splitlines()


def test_kill_9_of_the_guest_agent_during_a_container_start(vm: VmMachine) -> None:
    """The guest agent dies while `docker start` runs: once its init has started it again, no container says
    "running" without its process, none is lost, and ps -a / start / rm work."""
    from pymachine.hostvm import ssh

    vm.docker("run", "-d", "--name", "before", "pymachine/busybox", "sleep", "1d")
    markers = {"before": "1d"}
    # two moments (each kill costs a guest agent restart under TCG, and its init waits longer after each)
    for attempt, when in enumerate(("spawned", "exec'd")):
        name, marker = f"started-{attempt}", f"{4242000 + attempt}"
        vm.docker("create", "--name", name, "pymachine/busybox", "sleep", marker)
        markers[name] = marker
        with env_of(vm):
            argv = ssh.ssh_argv(vm.name, ["python3", "-", marker, when])
        killer = subprocess.Popen(
            argv, env=vm.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert killer.stdin is not None and killer.stdout is not None
        killer.stdin.write(_KILL_AT_START.encode())
        killer.stdin.close()
        assert killer.stdout.readline().strip() == b"armed"
        start = vm.docker("start", name, check=False, timeout=120)
        assert killer.wait(120) == 0, killer.stderr.read() if killer.stderr else ""
        # a `ps` waits in the host agent while no guest agent listens (sockforward.AGENT_RESTART_S)
        wait_for(lambda: vm.docker("ps", check=False, timeout=180).returncode == 0, "the agent back", 300)
        listed = vm.docker("ps", "-a", "--format", "{{.Names}}", timeout=30).stdout.split()
        assert set(markers) <= set(listed), listed  # none lost
        inspect = vm.docker("inspect", "-f", "{{.Name}} {{.State.Running}} {{.State.Pid}}", *markers).stdout
        states = {n.lstrip("/"): (running, pid) for n, running, pid in map(str.split, inspect.splitlines())}
        running = [n for n, (r, _) in states.items() if r == "true"]
        lines = _guest_cmdlines(vm, [states[n][1] for n in running])
        for n, line in zip(running, lines, strict=True):  # said running: its process is there
            assert markers[n] in line.split(), (n, states[n], line)
        print(f"kill when the container {when}: start said {start.returncode}; running after: {running}")
    assert vm.docker("inspect", "-f", "{{.State.Running}}", "before").stdout.strip() == "true"
    vm.docker("start", *markers, timeout=120)  # each can be started (or is running) and removed
    assert vm.docker("inspect", "-f", "{{.State.Running}}", *markers).stdout.split() == ["true"] * 3
    vm.docker("rm", "-f", *markers, timeout=120)
    assert vm.docker("ps", "-aq").stdout.strip() == ""


def test_image_build_force_is_refused_while_a_machine_uses_the_image(vm: VmMachine) -> None:
    with env_of(vm):
        from pymachine.hostvm import image, paths

        overlay = str(paths.machine(vm.name).disk)
        disk = image.qcow2_backing_file(paths.machine(vm.name).disk)
    assert disk is not None
    before = os.stat(disk)
    proc = vm.pymachine("image", "build", "--force", check=False, timeout=120)
    assert proc.returncode != 0
    assert "base disk" in proc.stderr and overlay in proc.stderr.replace("\n", ""), proc.stderr
    after = os.stat(disk)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )


def test_create_killed_half_way_leaves_a_usable_name(vm: VmMachine) -> None:
    with env_of(vm):
        from pymachine.hostvm import paths

        mp = paths.machine("faults-half")
    for scenario in ("create again", "delete"):
        for _attempt in range(
            10
        ):  # kill it after it claimed the folder and before config.json: retry if late
            child = subprocess.Popen(
                [sys.executable, "-m", "pymachine.app.cli", "create", "--driver", "qemu", "faults-half"],
                env=vm.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 120
            while not mp.dir.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)  # the folder lives a few hundred ms before its config.json: look often
            child.send_signal(signal.SIGKILL)
            child.wait()
            if mp.dir.exists() and not mp.config.exists():
                break
            if mp.config.exists():
                vm.pymachine("delete", "faults-half")
        else:
            pytest.fail("could not kill create half-way in 10 tries")
        if scenario == "create again":
            vm.pymachine("create", "--driver", "qemu", "faults-half")
            assert mp.config.exists()
        vm.pymachine("delete", "faults-half")
        assert not mp.dir.exists()
        assert "faults-half" not in vm.pymachine("list").stdout


def _guest_free(vm: VmMachine) -> int:
    code, out, _ = vm.ssh("df --output=avail -B1 / | tail -1")
    return int(out.strip()) if code == 0 and out.strip().isdigit() else -1


def test_a_container_fills_the_guest_disk(vm: VmMachine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    vm.docker(
        "run",
        "-d",
        "--name",
        "filler",
        "pymachine/busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/fill bs=1M; sleep 1d",
    )
    wait_for(lambda: 0 <= _guest_free(vm) < 8 * 1024 * 1024, "the guest disk to fill", 600)
    assert "filler" in vm.docker("ps", "--format", "{{.Names}}", timeout=30).stdout
    big = tmp_path / "big.tar"
    random_image_archive(big, 16 * 1024 * 1024)
    load = vm.docker("load", "-i", str(big), check=False, timeout=120)
    assert load.returncode != 0 and "no space left on device" in (load.stdout + load.stderr).lower(), load
    # the guest agent restarted on the full disk (its init starts it again) comes back with its containers
    kill = (
        "python3 - <<'EOF'\n"
        "import os\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        argv = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')\n"
        "    except OSError:\n"
        "        continue\n"
        "    if b'pymachine_agent' in argv and b'serve' in argv:\n"
        "        os.kill(int(p), 15)\n"
        "        print(p)\n"
        "EOF\n"
    )
    code, out, err = vm.ssh(kill)
    assert code == 0 and out.split(), (out, err)
    # The old agent answers until its listener closes (seconds under load): a `ps` it served proved nothing
    # about the restarted one, and the next command met the restart. Wait for it to be gone first.
    old = " ".join(p.decode() for p in out.split())
    wait_for(
        lambda: vm.ssh(f"for p in {old}; do test -e /proc/$p && exit 1; done; exit 0")[0] == 0,
        "the old agent's exit",
        120,
    )
    # each `ps` waits in the host agent while no guest agent listens (sockforward.AGENT_RESTART_S)
    wait_for(
        lambda: "filler" in vm.docker("ps", "--format", "{{.Names}}", check=False, timeout=180).stdout,
        "the agent back",
        300,
    )
    vm.docker("rm", "-f", "filler", timeout=60)
    wait_for(lambda: _guest_free(vm) > 256 * 1024 * 1024, "the space back", 60)
    vm.docker("load", "-i", str(big), timeout=120)
    code, out, _ = vm.ssh("grep -c Traceback /var/log/pymachine-agent.log || true")
    print(f"agent log tracebacks: {out.strip()}")


def test_an_agent_whose_qemu_died_is_stopped_and_never_serves_a_new_machine(vm: VmMachine) -> None:
    with env_of(vm):
        from pymachine.hostvm import paths
        from pymachine.hostvm.hostagent import launcher

        mp = paths.machine(vm.name)
        agent, supervisor = launcher.agent_pid(vm.name), launcher.supervisor_pid(vm.name)
        assert agent is not None and supervisor is not None
        qemu = int(mp.qemu_pid.read_text().strip())
        os.kill(qemu, signal.SIGKILL)
        wait_for(lambda: _gone(qemu), "QEMU to die")
        time.sleep(2)
        assert not _gone(agent)  # the agent waits for its VM to come back: only stop/delete end it
        vm.pymachine("stop", vm.name, timeout=120)
        wait_for(lambda: _gone(agent) and _gone(supervisor), "stop to end the agent and its supervisor", 30)
        assert launcher.agent_pid(vm.name) is None and launcher.supervisor_pid(vm.name) is None

        launcher._spawn(vm.name)  # an agent of a stopped machine (what an older pymachine left behind)
        wait_for(lambda: launcher.agent_pid(vm.name) is not None, "the agent")
        agent = launcher.agent_pid(vm.name)
        vm.pymachine("delete", vm.name, timeout=120)
        wait_for(lambda: _gone(agent), "delete to end the agent", 30)  # type: ignore[arg-type]
        vm.pymachine("create", "--driver", "qemu", "--no-home-mount", vm.name, timeout=300)
        time.sleep(2)
        assert launcher.agent_pid(vm.name) is None and not mp.docker_socket.exists()
