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

Goal (issue 17): `docker load` ≥ 2× today's (SSH). Prints medians, ratios to SSH and the load average.
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


def wait_armed(name: str, timeout: float = 120) -> None:
    """The agent arms the fast path after the guest's hello and holds the serial port once the guest agent
    answered its hello; a remote machine, no monitor or a VM without the port never does."""
    deadline = time.monotonic() + timeout
    control(name, "engine-path", via="auto")
    while True:
        answer = control(name, "engine-path")
        fast, serial = answer["engine_path"], answer.get("serial") or {}
        if fast["state"] == "up" and serial.get("state") == "up":
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


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load_and_save(sock: Path, archive: Path, tag: str, pids: list[int]) -> tuple[float, float, float, float]:
    """Seconds for `docker load -i archive` and for `docker save` of it through `sock` (then removed), and
    the CPU seconds `pids` used during each."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    env.pop("DOCKER_CONTEXT", None)
    took, cpu = [], []
    saved = archive.with_name("saved.tar")  # the CLI renames its output into place: not /dev/null
    for argv in (["load", "-q", "-i", str(archive)], ["save", "-o", str(saved), tag]):
        start, cpu0 = time.perf_counter(), cpu_seconds(pids)
        subprocess.run(["docker", *argv], env=env, check=True, capture_output=True)
        took.append(time.perf_counter() - start)
        cpu.append(cpu_seconds(pids) - cpu0)
    subprocess.run(["docker", "rmi", tag], env=env, check=True, capture_output=True)
    saved.unlink()
    return took[0], took[1], cpu[0], cpu[1]


def run(name: str, mib: int, repeat: int, requests: int) -> None:
    from pymachine.hostvm import paths

    sock = paths.machine(name).docker_socket
    tmp = Path(tempfile.mkdtemp(prefix="pmbench-load"))
    speeds: dict[str, list[float]] = {p: [] for p in PATHS}
    saves: dict[str, list[float]] = {p: [] for p in PATHS}
    lat: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}  # ms per MiB: load, save
    try:
        wait_armed(name)
        pids = cpu_pids(name)
        print(f"load average at the start: {loadavg()}", file=sys.stderr)
        for r in range(repeat):
            for path in PATHS[r % 3 :] + PATHS[: r % 3]:  # rotating: each path comes first once in 3
                use(name, path)
                archive = tmp / "image.tar"
                tag = f"bench-load:{path}{r}"
                random_image_archive(archive, mib * 1024 * 1024, tag)
                size = archive.stat().st_size
                took, save, cpu_load, cpu_save = load_and_save(sock, archive, tag, pids)
                speeds[path].append(size / took / 1e6)
                saves[path].append(size / save / 1e6)
                cpu[path].append((cpu_load * 1000 / (size / 2**20), cpu_save * 1000 / (size / 2**20)))
                lat[path] += latencies(str(sock), requests)
                print(
                    f"round {r + 1} {path}: load {took:.1f} s, save {save:.1f} s (load average {loadavg()})",
                    file=sys.stderr,
                )
    finally:
        control(name, "engine-path", via="auto")
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nengine socket, machine {name}: docker load of {mib} MiB × {repeat} per path,"
        f" {requests} GETs per round"
    )
    print(
        f"{'path':6} {'load MB/s':>10} {'save MB/s':>10} {'GET /containers/json p50 / p99':>34}"
        f"   QEMU + host agent CPU, ms/MiB: load / save"
    )
    for path in PATHS:
        p50, p99 = pct(lat[path], 0.5) * 1000, pct(lat[path], 0.99) * 1000
        load, save = statistics.median(speeds[path]), statistics.median(saves[path])
        c_load = statistics.median(c[0] for c in cpu[path])
        c_save = statistics.median(c[1] for c in cpu[path])
        print(
            f"{path:6} {load:>10.2f} {save:>10.2f} {p50:>21.1f} / {p99:.1f} ms {c_load:>18.0f} / {c_save:.0f}"
        )
    for path in PATHS[1:]:
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
    args = parser.parse_args()
    from pymachine.hostvm.hostagent.serialpath import ENV_SWITCH

    os.environ[ENV_SWITCH] = "on"  # a throwaway machine gets the port; its host agent uses it
    with throwaway_machine(args.machine) as name:
        run(name, args.mib, args.repeat, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
