"""The engine socket's three paths on one machine, in one run: SSH, the fast path (hostagent/fastpath.py:
QEMU's user network) and the serial path (hostagent/serialpath.py: the VM's virtio-serial port).

    python bench/engine_path.py --machine NAME     # a running local machine of this PYMACHINE_HOME, started
                                                   # with PYMACHINE_ENGINE_PORT=on (the serial path is off
                                                   # by default: docs/hostagent.md)
    python bench/engine_path.py                    # boots a throwaway one (direct-QEMU driver), switch on

The host agent's control op `engine-path` switches one docker.sock between the paths, so all are measured
through the same socket, agent and guest agent, in rotating rounds (whatever runs right after a long SSH
transfer comes out slower: see bench/forward.py):

1. `docker load` of an image with one random layer of --mib MiB (a new image each time: nothing is cached),
   then `docker save` of it and `docker rmi`; MB/s of the archive each way. The guest agent unpacks a load
   while its body streams in (images/staging.py) and a save streams its blobs by sendfile, so the faster
   channel's gain reaches both, minus the guest's own work (under TCG: receiving, a sha256 and one write per
   byte; bench/guest_load.py measures that part alone, in the guest).
2. `GET /containers/json`, a new connection per request as docker clients do: p50 / p99.

Goal (issue 17): `docker load` ≥ 2× today's (SSH). Prints medians, ratios to SSH and the load average, and CPU
per MiB: QEMU's and the host agent's (host /proc), the guest agent's process and the guest's busy time on all
vCPUs (guest /proc, read over an SSH connection of its own before and after each transfer). Under TCG the
guest's counters include time the host took its vCPU threads away (no steal time): compare them only between
neighbouring runs. `--paths ssh,fast` leaves out the serial path (a machine started without the switch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forward import latencies, pct, throwaway_machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.random_image import random_image_archive  # noqa: E402

PATHS = ("ssh", "fast", "serial")
VIA = {"ssh": "ssh", "fast": "fast", "serial": "auto"}  # the control op's choice that takes each path


def control(name: str, op: str, **args: object) -> dict:
    from pymachine.hostvm import paths
    from pymachine.hostvm.hostagent import control as ctl

    return ctl.call(paths.machine(name).control_socket, op, timeout=60, **args)


def use(name: str, path: str) -> None:
    answer = control(name, "engine-path", via=VIA[path])
    if answer.get("via") != path:
        raise SystemExit(f"the engine socket cannot take the {path} path now: {answer}")


def wait_armed(name: str, timeout: float = 120, serial: bool = True) -> None:
    """The agent arms the fast path after the guest's hello and holds the serial port once the guest agent
    answered its hello; a remote machine, no monitor or a VM without the port never does."""
    deadline = time.monotonic() + timeout
    control(name, "engine-path", via="auto")
    while True:
        answer = control(name, "engine-path")
        fast, port = answer["engine_path"], answer.get("serial") or {}
        if fast["state"] == "up" and (not serial or port.get("state") == "up"):
            return
        if time.monotonic() > deadline or fast["state"] in ("off", "unsupported"):
            raise SystemExit(f"the engine socket has not all three paths to compare: {answer}")
        time.sleep(0.5)


def cpu_pids(name: str) -> list[int]:
    """QEMU (the guest's vCPUs, slirp and the chardev all run in it) and the host agent (paramiko's crypto,
    the pumps): their CPU per MiB is a count the host's load does not stretch, unlike MB/s."""
    from pymachine.hostvm import machines
    from pymachine.hostvm.hostagent import launcher

    qemu = machines.driver_for(machines.load_config(name)).pid(name)
    return [p for p in (qemu, launcher.agent_pid(name)) if p]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


# the guest agent's process (all threads) and the guest's busy time (every vCPU, the kernel's receive and
# writeback included), read in the guest: counts the host's load does not stretch, unlike MB/s
_GUEST_CPU = 'cat /proc/$(pgrep -of "pymachine_agent serve")/stat; head -1 /proc/stat'
_GUEST_HZ = 100  # USER_HZ of the guest's kernel


class GuestCPU:
    """Reads the guest's CPU counters over one SSH connection of its own (an exec channel per read)."""

    def __init__(self, name: str) -> None:
        from pymachine.hostvm import ssh

        self._ssh = ssh
        self._client = ssh.connect(name)

    def read(self) -> tuple[float, float]:
        """CPU seconds: (the guest agent's utime + stime, the guest's busy time on all vCPUs)."""
        status, out, err = self._ssh.exec_command(self._client, _GUEST_CPU)
        if status:
            raise RuntimeError(f"reading the guest's CPU: {err.decode(errors='replace')}")
        agent, total = out.decode().splitlines()[:2]
        fields = agent.rsplit(")", 1)[1].split()
        ticks = [int(x) for x in total.split()[1:]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        return (int(fields[11]) + int(fields[12])) / _GUEST_HZ, busy / _GUEST_HZ

    def close(self) -> None:
        self._client.close()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load_and_save(
    sock: Path, archive: Path, tag: str, pids: list[int], guest: GuestCPU
) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Seconds for `docker load -i archive` and for `docker save` of it through `sock` (then removed), the
    CPU seconds `pids` used during each, and the guest's (agent, all busy) during each."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    env.pop("DOCKER_CONTEXT", None)
    took, cpu, in_guest = [], [], []
    saved = archive.with_name("saved.tar")  # the CLI renames its output into place: not /dev/null
    for argv in (["load", "-q", "-i", str(archive)], ["save", "-o", str(saved), tag]):
        agent0, busy0 = guest.read()
        start, cpu0 = time.perf_counter(), cpu_seconds(pids)
        subprocess.run(["docker", *argv], env=env, check=True, capture_output=True)
        took.append(time.perf_counter() - start)
        cpu.append(cpu_seconds(pids) - cpu0)
        agent1, busy1 = guest.read()
        in_guest.append((agent1 - agent0, busy1 - busy0))
    subprocess.run(["docker", "rmi", tag], env=env, check=True, capture_output=True)
    saved.unlink()
    return took, cpu, in_guest


def run(name: str, mib: int, repeat: int, requests: int, paths_: tuple[str, ...] = PATHS) -> None:
    from pymachine.hostvm import paths

    sock = paths.machine(name).docker_socket
    tmp = Path(tempfile.mkdtemp(prefix="pmbench-load"))
    speeds: dict[str, list[float]] = {p: [] for p in paths_}
    saves: dict[str, list[float]] = {p: [] for p in paths_}
    lat: dict[str, list[float]] = {p: [] for p in paths_}
    cpu: dict[str, list[tuple[float, float]]] = {p: [] for p in paths_}  # ms per MiB: load, save
    # ms per MiB in the guest: (agent load, agent save, guest busy load, guest busy save)
    gcpu: dict[str, list[tuple[float, float, float, float]]] = {p: [] for p in paths_}
    guest = None
    try:
        wait_armed(name, serial="serial" in paths_)
        pids = cpu_pids(name)
        guest = GuestCPU(name)
        print(f"load average at the start: {loadavg()}", file=sys.stderr)
        n = len(paths_)
        for r in range(repeat):
            for path in paths_[r % n :] + paths_[: r % n]:  # rotating: each path comes first once in n
                use(name, path)
                archive = tmp / "image.tar"
                tag = f"bench-load:{path}{r}"
                random_image_archive(archive, mib * 1024 * 1024, tag)
                size = archive.stat().st_size
                (took, save), (cpu_load, cpu_save), in_guest = load_and_save(sock, archive, tag, pids, guest)
                mb, mib_ = size / 1e6, size / 2**20
                speeds[path].append(mb / took)
                saves[path].append(mb / save)
                cpu[path].append((cpu_load * 1000 / mib_, cpu_save * 1000 / mib_))
                (a_load, b_load), (a_save, b_save) = in_guest
                gcpu[path].append(tuple(x * 1000 / mib_ for x in (a_load, a_save, b_load, b_save)))  # type: ignore[arg-type]
                lat[path] += latencies(str(sock), requests)
                print(
                    f"round {r + 1} {path}: load {took:.1f} s, save {save:.1f} s, guest agent CPU"
                    f" {a_load:.2f} / {a_save:.2f} s (load average {loadavg()})",
                    file=sys.stderr,
                )
    finally:
        if guest is not None:
            guest.close()
        control(name, "engine-path", via="auto")
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nengine socket, machine {name}: docker load of {mib} MiB × {repeat} per path,"
        f" {requests} GETs per round"
    )
    print(
        f"{'path':6} {'load MB/s':>10} {'save MB/s':>10} {'GET /containers/json p50 / p99':>34}"
        f"   CPU ms/MiB, load / save: QEMU + host agent | guest agent | guest busy"
    )
    for path in paths_:
        p50, p99 = pct(lat[path], 0.5) * 1000, pct(lat[path], 0.99) * 1000
        load, save = statistics.median(speeds[path]), statistics.median(saves[path])
        c_load = statistics.median(c[0] for c in cpu[path])
        c_save = statistics.median(c[1] for c in cpu[path])
        g = [statistics.median(c[i] for c in gcpu[path]) for i in range(4)]
        print(
            f"{path:6} {load:>10.2f} {save:>10.2f} {p50:>21.1f} / {p99:.1f} ms {c_load:>18.0f} / {c_save:.0f}"
            f" | {g[0]:.0f} / {g[1]:.0f} | {g[2]:.0f} / {g[3]:.0f}"
        )
    for path in paths_:
        if path == "ssh" or "ssh" not in paths_:
            continue
        load_ratio = statistics.median(speeds[path]) / statistics.median(speeds["ssh"])
        save_ratio = statistics.median(saves[path]) / statistics.median(saves["ssh"])
        p50_ratio = pct(lat["ssh"], 0.5) / pct(lat[path], 0.5)
        print(
            f"{path} / ssh: docker load {load_ratio:.2f}× (goal ≥ 2×), docker save {save_ratio:.2f}×,"
            f" GET p50 {p50_ratio:.2f}× faster"
        )
    print(f"load average at the end: {loadavg()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", help="a running machine (default: boot a throwaway one)")
    parser.add_argument("--mib", type=int, default=200, help="MiB per image (the issue's figure: 200)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="which paths, comma-separated (default: all)"
    )
    args = parser.parse_args()
    from pymachine.hostvm.hostagent.serialpath import ENV_SWITCH

    os.environ[ENV_SWITCH] = "on"  # a throwaway machine gets the port; its host agent uses it
    with throwaway_machine(args.machine) as name:
        run(name, args.mib, args.repeat, args.requests, tuple(args.paths.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
