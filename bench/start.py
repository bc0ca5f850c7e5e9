"""Start benchmark: a stopped machine → its engine answering on the host, by resume (the state `stop` saved)
and by cold boot (`stop --shutdown`, then `start`), medians of N of each, interleaved in one run on one
machine; and the `stop` itself, saving vs shutting down. Goals under TCG (issue 14): resume ≤ 2 s, cold ≤ 8 s,
stop ≤ 2 s.

Each run saves and resumes twice: with the host agent kept, parked, across the stop (what `stop` does), and
with the agent stopped before the stop and started again by the resume (what it did before: the peer for the
parked path, measured in the same run). Every progress note and stage is timed, so the per-stage medians show
where the time goes.

"Engine answering" = `GET /_ping` through the machine's forwarded docker.sock returns OK. The clock runs from
the `machines.start` call (in-process: a CLI's own ~0.4 s Python start is not counted) to that answer.

Each cold boot also times, after the engine answers, `GET /containers/json` answered (what `docker ps` asks:
its engine must have started, which on a cold boot comes after the socket answers) since the `start` call.

`--memory` also measures QEMU's memory on the host 25 s after a resume (VmRSS), with the host agent's
give-back of the guest's free memory (hostagent/memback.py: a machine with a virtiofs share has its RAM in
shared memory, which the restore allocates whole) against the same resume with it off
(`PYMACHINE_MEMORY_BACK=0` in a host agent started for it), in the same run.

`--peer-dockerd` also cold-boots, in each run, the peer the issue names: dockerd in a VM. It is a second
machine from the cluster image variant (images/cluster: the same kernel, init, shares and host agent, with
Debian's dockerd supervised on the engine socket instead of our guest agent), booted while ours is shut down
and timed alike (the `start` call → `GET /_ping` through its forwarded docker.sock, then `GET
/containers/json`); the ratio of the two medians takes the host's speed out (issue 14 filed 15 s for this peer
against the ≤ 8 s goal).

`--first-run` also times, after each cold boot's engine answers, the user's likely first action: a container
of `pymachine/busybox` created, started and waited for (what `docker run --rm IMAGE true` asks of the engine;
the image is loaded once, before the first run): since the `start` call, so work the boot moved past "engine
answering" (the kernel modules, the engine's start) is counted there.

    python bench/start.py [--runs 5] [--driver libvirt|qemu] [--mount DIR] [--resume-only | --cold-only]
                          [--name PREFIX] [--first-run] [--memory] [--peer-dockerd]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pymachine.hostvm import machines, paths, ssh
from pymachine.hostvm.hostagent import launcher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.saver import rss_bytes  # noqa: E402  (QEMU's VmRSS, as bench/saver.py reads it)


def ping(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"OK")
    except OSError:
        return False


QEMU_CPU = "(QEMU CPU seconds until the engine answered)"
FIRST_RUN = "first run done"
LISTED = "docker ps answered"
QEMU_CPU_RUN = "(QEMU CPU seconds until the first run was done)"
BUSYBOX = "pymachine/busybox:latest"


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=300)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def engine_call(
    sock_path: Path, method: str, url: str, body: object = None, data: bytes | None = None
) -> object:
    conn = _UnixHTTP(sock_path)
    try:
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, url, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw
    finally:
        conn.close()


def load_busybox(name: str) -> None:
    from pymachine.hostvm.container_images import ensure_container_image

    data = Path(ensure_container_image("pymachine/busybox")).read_bytes()
    engine_call(paths.machine(name).docker_socket, "POST", "/images/load?quiet=1", data=data)


def first_run(name: str) -> None:
    """`docker run --rm pymachine/busybox true` without the CLI: create, start, wait (auto-removed)."""
    sock = paths.machine(name).docker_socket
    body = {"Image": BUSYBOX, "Cmd": ["true"], "HostConfig": {"AutoRemove": True}}
    created = engine_call(sock, "POST", "/containers/create", body)
    cid = created["Id"]  # type: ignore[index]
    engine_call(sock, "POST", f"/containers/{cid}/start")
    engine_call(sock, "POST", f"/containers/{cid}/wait?condition=removed")


def qemu_cpu_seconds(name: str) -> float | None:
    """CPU seconds (user + system) the machine's QEMU process has used since it started: on a shared host a
    steadier A/B measure of a boot than the wall clock, which waits for the other processes' turns too."""
    pid = machines.driver_for(machines.load_config(name)).pid(name)
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def qemu_rss_mib(name: str) -> int:
    pid = machines.driver_for(machines.load_config(name)).pid(name)
    assert pid is not None, f"no QEMU process for machine '{name}'"
    return rss_bytes(pid) >> 20


MEMORY_SETTLE_S = 25.0  # the give-back starts 10 s after the resume (memback.DELAY_S) and takes 3-5 s


def memory_after_resume(name: str, runs: int) -> dict[str, list[int]]:
    """QEMU's VmRSS in MiB right after a resume and MEMORY_SETTLE_S later, with the give-back and without it
    (a host agent started with PYMACHINE_MEMORY_BACK=0), alternating, `runs` of each."""
    rss: dict[str, list[int]] = {}
    for _ in range(runs):
        for side in ("give-back", "without"):
            launcher.stop(name)  # the next start's agent takes this side's environment
            if side == "without":
                os.environ["PYMACHINE_MEMORY_BACK"] = "0"
            else:
                os.environ.pop("PYMACHINE_MEMORY_BACK", None)
            timed_stop(name, shutdown=False)
            timed_start(name, {})
            rss.setdefault(f"{side}: right after the resume", []).append(qemu_rss_mib(name))
            time.sleep(MEMORY_SETTLE_S)
            rss.setdefault(f"{side}: {MEMORY_SETTLE_S:.0f} s later", []).append(qemu_rss_mib(name))
    os.environ.pop("PYMACHINE_MEMORY_BACK", None)
    return rss


PEER_COLD = "dockerd in a VM: cold boot"


def create_peer(peer: str, driver: str, mounts: list[str]) -> None:
    """The dockerd-in-a-VM peer: a one-node cluster machine (no Swarm formed: dockerd alone), booted once and
    shut down, so that each run's boot of it is a cold boot like ours."""
    from pymachine.hostvm import cluster

    node = cluster.plan(peer, 1, 1)[0]
    machines.create(peer, driver=driver, mounts=mounts, home_mount=False, idle_suspend=0, cluster=node)
    machines.start(peer)
    machines.stop(peer, shutdown=True)


def timed_start(name: str, marks: dict[str, float]) -> float:
    """Seconds from the `start` call to the engine answering; QEMU's CPU seconds by then go into `marks`
    ("QEMU CPU seconds", a quantity, not a time since the call)."""
    t0 = time.monotonic()

    machines.start(name, marker(marks, t0))
    marks["start returned"] = time.monotonic() - t0
    sock = paths.machine(name).docker_socket
    deadline = time.monotonic() + 120
    while not ping(sock):
        if time.monotonic() > deadline:
            raise RuntimeError("the engine did not answer")
        time.sleep(0.02)
    took = time.monotonic() - t0
    used = qemu_cpu_seconds(name)
    if used is not None:
        marks[QEMU_CPU] = used
    return took


GUEST_TIMELINE = (
    "cat /proc/uptime /run/pymachine-init.log;"
    " grep 'serving Docker API' /var/log/pymachine-agent.log | tail -1;"
    " grep 'engine started' /var/log/pymachine-agent.log | tail -1"
)


def guest_timeline(name: str, t0: float, marks: dict[str, float]) -> None:
    """The guest's own view of its boot, on the same clock as `marks` (seconds since the `start` call): the
    init's steps (/run/pymachine-init.log, guest uptime per step) and the agent's start phases (its log's
    'serving' line: imports, engine, each since its spawn; and, where its engine started only once the
    kernel modules were in, its 'engine started' line: modules, engine). The guest's uptime is read by an
    exec; the host's clock at its midpoint maps guest time onto ours (off by at most half the shortest of 3
    round trips)."""
    client = ssh.connect(name)
    try:
        offsets = []  # (round trip, offset): the shortest round trip maps best
        for _ in range(3):
            before = time.monotonic()
            status, out, _ = ssh.exec_command(client, GUEST_TIMELINE)
            after = time.monotonic()
            lines = out.decode(errors="replace").splitlines()
            if status != 0 or not lines:
                return
            offsets.append((after - before, (before + after) / 2 - t0 - float(lines[0].split()[0])))
    finally:
        client.close()
    offset = min(offsets)[1]
    spawned = None
    for line in lines[1:]:
        at, _, step = line.partition(" ")
        if at.replace(".", "", 1).isdigit():
            marks[f"guest: {step}"] = float(at) + offset
            spawned = float(at) + offset if step == "agent" else spawned
        elif ("serving Docker API" in line or "engine started" in line) and spawned is not None:
            for phase, seconds in re.findall(r"(\w[\w ]*?) ([0-9.]+) s", line.rsplit("(", 1)[-1]):
                marks[f"guest: agent {phase}"] = spawned + float(seconds)
            serving = re.search(r"([0-9.]+) s after its start", line)
            if serving and "serving Docker API" in line:
                marks["guest: agent serving"] = spawned + float(serving.group(1))


def marker(marks: dict[str, float], t0: float):  # type: ignore[no-untyped-def]
    """A progress callback noting when each stage finished and each note was said, since t0."""

    def progress(note: object) -> None:
        message = str(note)  # typed progress (StageProgress) or a plain note
        if ": ok (" in message:
            marks.setdefault(message.split(": ")[1] + " done", time.monotonic() - t0)
        elif not message.startswith("stage "):
            marks.setdefault(re.sub(r"[0-9.]+ (s|MiB)", "N", message)[:70], time.monotonic() - t0)

    return progress


def timed_stop(name: str, shutdown: bool, marks: dict[str, float] | None = None) -> tuple[float, bool]:
    t0 = time.monotonic()
    marks = {} if marks is None else marks
    m = machines.stop(name, marker(marks, t0), shutdown=shutdown)
    took = time.monotonic() - t0
    for stage, seconds in ((m.saved_state or {}).get("save_stages") or {}).items():
        marks[f"({stage}: seconds, not a time since the call)"] = seconds
    return took, m.saved_state is not None


def _cpu_note(stages: dict[str, dict[str, list[float]]], kind: str, runs: int) -> str:
    cpu = stages.get(kind, {}).get(QEMU_CPU, [])
    return f" (QEMU CPU {cpu[-1]:.2f} s)" if len(cpu) == runs else ""


def report(title: str, stages: dict[str, list[float]]) -> None:
    print(f"{title} (median since the call):")
    for stage, times in sorted(stages.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"  {statistics.median(times):6.2f} s  {stage}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--driver", default="libvirt")
    ap.add_argument("--mount", action="append", default=[], help="share this folder (default: none)")
    ap.add_argument("--resume-only", action="store_true", help="no cold boots (quick runs while tuning)")
    ap.add_argument("--cold-only", action="store_true", help="no saves and resumes (cold boots only)")
    ap.add_argument("--name", default="bs", help="machine name prefix (the process id is appended)")
    ap.add_argument("--first-run", action="store_true", help="also time a first container after cold boots")
    ap.add_argument("--memory", action="store_true", help="also QEMU's memory after resumes (with a share)")
    ap.add_argument("--peer-dockerd", action="store_true", help="also cold-boot dockerd in a VM (the peer)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pmbs", dir="/var/tmp"))
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    name = f"{args.name}-{os.getpid()}"
    peer = f"{name}-dockerd" if args.peer_dockerd and not args.resume_only else None
    # kind -> seconds per run; "parked": the host agent kept across the saving stop (the default path),
    # "restarted": the agent stopped before the stop and started again by the resume (the path before it)
    took: dict[str, list[float]] = {}
    stages: dict[str, dict[str, list[float]]] = {}

    def note(kind: str, seconds: float, marks: dict[str, float]) -> None:
        took.setdefault(kind, []).append(seconds)
        for stage, at in marks.items():
            stages.setdefault(kind, {}).setdefault(stage, []).append(at)

    try:
        machines.create(name, driver=args.driver, mounts=args.mount, home_mount=False)
        if peer:
            create_peer(peer, args.driver, args.mount)
        machines.start(name)
        if args.first_run:
            load_busybox(name)
        for i in range(args.runs):
            for agent in () if args.cold_only else ("parked", "restarted"):
                if agent == "restarted":
                    launcher.stop(name)  # what a saving stop did before the agent was kept
                marks: dict[str, float] = {}
                seconds, saved = timed_stop(name, shutdown=False, marks=marks)
                if not saved:
                    print("stop did not save the state (see the reason above): no resume to measure")
                    return 1
                note(f"stop (save), agent {agent}", seconds, marks)
                marks = {}
                seconds = timed_start(name, marks)
                if any(k.startswith("cold boot") for k in marks):
                    print(f"run {i + 1}: the resume fell back to a cold boot: {marks}")
                    return 1
                note(f"resume, agent {agent}", seconds, marks)
            if not args.resume_only:
                marks = {}
                seconds, _ = timed_stop(name, shutdown=True, marks=marks)
                note("stop (shutdown)", seconds, marks)
                if peer:  # booted while ours is down, and down again before ours boots
                    marks = {}
                    t0 = time.monotonic()
                    seconds = timed_start(peer, marks)
                    engine_call(paths.machine(peer).docker_socket, "GET", "/containers/json")
                    note(PEER_COLD, seconds, marks)
                    note(f"{PEER_COLD} → docker ps answered", time.monotonic() - t0, {})
                    timed_stop(peer, shutdown=True)
                marks = {}
                t0 = time.monotonic()
                seconds = timed_start(name, marks)
                engine_call(paths.machine(name).docker_socket, "GET", "/containers/json")
                marks[LISTED] = time.monotonic() - t0
                if args.first_run:
                    first_run(name)
                    marks[FIRST_RUN] = time.monotonic() - t0
                    used = qemu_cpu_seconds(name)
                    if used is not None:
                        marks[QEMU_CPU_RUN] = used
                guest_timeline(name, t0, marks)
                note("cold boot", seconds, marks)
                note("cold boot → docker ps answered", marks[LISTED], {})
                if args.first_run:
                    note("cold boot → first run done", marks[FIRST_RUN], {})
            runs = ", ".join(f"{k} {v[-1]:.2f} s{_cpu_note(stages, k, len(v))}" for k, v in took.items())
            print(f"run {i + 1}: {runs} (load {os.getloadavg()[0]:.1f})", flush=True)
        rss = memory_after_resume(name, args.runs) if args.memory else {}
    finally:
        try:
            for made in (name, peer):
                if made and machines.exists(made):
                    machines.delete(made, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    print(
        f"\n{args.driver} driver, {args.runs} runs, shares: {args.mount or 'none'}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    goals = {"resume, agent parked": 2, "cold boot": 8, "stop (save), agent parked": 2}
    for kind, values in took.items():
        goal = f"  (goal ≤ {goals[kind]} s)" if kind in goals else ""
        cpu = stages.get(kind, {}).get(QEMU_CPU)
        used = f", QEMU CPU median {med(cpu):.2f} s ({min(cpu):.2f}-{max(cpu):.2f})" if cpu else ""
        print(f"{kind:28} median {med(values):6.2f} s ({min(values):.2f}-{max(values):.2f}){used}{goal}")
    ratio = [
        ("resume, agent parked", "resume, agent restarted"),
        ("stop (save), agent parked", "stop (save), agent restarted"),
        ("resume, agent parked", "cold boot"),
        ("stop (save), agent parked", "stop (shutdown)"),
        ("cold boot", PEER_COLD),
        ("cold boot → docker ps answered", f"{PEER_COLD} → docker ps answered"),
        ("resume, agent parked", PEER_COLD),
    ]
    for a, b in ratio:
        if a in took and b in took:
            print(f"{a} / {b}: {med(took[a]) / med(took[b]):.2f}")
    for kind, values in rss.items():
        print(f"QEMU VmRSS, {kind:38} median {med(values):5.0f} MiB ({min(values)}-{max(values)})")
    later = f"{MEMORY_SETTLE_S:.0f} s later"
    if rss:
        ratio = med(rss[f"give-back: {later}"]) / med(rss[f"without: {later}"])
        print(f"QEMU VmRSS {later}, give-back / without: {ratio:.2f}")
    for kind, marks in stages.items():
        report(f"{kind}: stages", marks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
