"""Host agent respawn benchmark: kill -9 of the host agent of a running machine → its engine socket and a
published port answer again, with no pymachine command in between (its supervisor forks the next agent).
Goal (issue 16): back within 2 s, also under heavy load.

Three variants, interleaved in one run on one machine, medians of N kills each:
- spare: as shipped: the supervisor holds the agent's listening sockets (hostagent/handover.py), so clients
  queue, and keeps a standby agent whose SSH link is already up (hostagent/spare.py), which takes over;
- handover: the same build with PYMACHINE_SPARE_LINK=0: the next agent is forked at the kill and serves the
  held sockets once its own SSH handshake is done;
- peer: also PYMACHINE_HANDOVER=0: the next agent binds anew, ports after the guest's port replay, clients
  meanwhile refused.

"Back" = the answer to the first request sent after the kill (requests go every 20 ms, each with a 15 s
timeout), measured from the kill. Also shown: when the new agent started and when its SSH link was up
(events.jsonl), and how many requests failed in between (refused or timed out). --load N runs N busy-looping
processes for the whole run (a CPU load generator; this host has 2 cores).

    python bench/hostagent_respawn.py [--runs 5] [--load 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pymachine.hostvm import machines, paths
from pymachine.hostvm.hostagent import handover, launcher, spare

REQUEST_TIMEOUT = 15.0


def ping(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(REQUEST_TIMEOUT)
            s.connect(str(sock_path))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def http(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/")
    except OSError:
        return False


def probe(check, stop: threading.Event, out: list[tuple[float, float, bool]]) -> None:  # type: ignore[no-untyped-def]
    while not stop.is_set():
        sent = time.monotonic()
        ok = check()
        out.append((sent, time.monotonic(), ok))
        time.sleep(0.02)


def back(results: list[tuple[float, float, bool]], since: float) -> tuple[float, int]:
    first = next(done for sent, done, ok in results if ok and sent > since)
    failed = sum(1 for sent, done, ok in results if sent > since and done <= first and not ok)
    return first - since, failed


def stages_after(events: Path, offset: int, killed_at: float) -> dict[str, float]:
    """When (s after the kill, by the events' wall-clock stamps) the new agent started and its SSH link came
    up."""
    with open(events) as f:
        f.seek(offset)
        lines = [json.loads(line) for line in f if line.strip()]
    started = next(
        (e["ts"] for e in lines if e.get("type") == "state" and e.get("state") == "starting"), None
    )
    up = next((e["ts"] for e in lines if e.get("type") == "link" and e.get("state") == "up"), None)
    nan = float("nan")
    return {
        "started": started - killed_at if started else nan,
        "link": up - killed_at if up else nan,
    }


def restart_agent(name: str, variant: str, port: int) -> None:
    launcher.stop(name, timeout=10)
    os.environ[handover.DISABLE_ENV] = "0" if variant == "peer" else "1"
    os.environ[spare.DISABLE_ENV] = "1" if variant == "spare" else "0"
    launcher._spawn(name)
    deadline = time.monotonic() + 120
    while not (ping(paths.machine(name).docker_socket) and http(port)):
        if time.monotonic() > deadline:
            raise RuntimeError("the host agent did not come up")
        time.sleep(0.1)


def one_kill(name: str, port: int) -> dict[str, float]:
    mp = paths.machine(name)
    engine: list[tuple[float, float, bool]] = []
    ports: list[tuple[float, float, bool]] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=probe, args=(lambda: ping(mp.docker_socket), stop, engine), daemon=True),
        threading.Thread(target=probe, args=(lambda: http(port), stop, ports), daemon=True),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    pid = launcher.agent_pid(name)
    assert pid is not None
    offset = mp.events.stat().st_size
    killed, killed_at = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (
        any(ok and s > killed for s, _, ok in engine) and any(ok and s > killed for s, _, ok in ports)
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("not back within 60 s")
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(REQUEST_TIMEOUT + 1)
    e_back, e_failed = back(engine, killed)
    p_back, p_failed = back(ports, killed)
    return {"engine": e_back, "port": p_back, "failed": e_failed + p_failed} | stages_after(
        mp.events, offset, killed_at
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--load", type=int, default=4, help="busy-looping processes during the run")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pmbr", dir="/tmp"))  # short: the machine folder holds sockets
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    os.environ.pop("DOCKER_HOST", None)
    name = f"br-{os.getpid()}"
    busy: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, float]]] = {"spare": [], "handover": [], "peer": []}
    try:
        machines.create(name, driver="qemu", home_mount=False)
        machines.start(name)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from support.agent import busybox_tarball

        docker = ["docker", "--context", launcher.context_name(name)]
        subprocess.run([*docker, "load", "-i", str(busybox_tarball())], check=True, capture_output=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        run = subprocess.run(
            [*docker, "run", "-d", "-p", f"{port}:80", "pymachine/busybox", "httpd", "-f", "-p", "80"],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"docker run failed: {run.stderr.strip()}")
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
        for i in range(args.runs):
            order = list(results) if i % 2 == 0 else list(reversed(results))
            for variant in order:
                restart_agent(name, variant, port)
                deadline = time.monotonic() + 60  # a kill long after the start: the spare is connected
                while variant == "spare" and not spare.connected(paths.machine(name)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the spare agent did not connect")
                    time.sleep(0.1)
                r = one_kill(name, port)
                results[variant].append(r)
                print(
                    f"run {i + 1} {variant:8}: engine {r['engine']:.2f} s, port {r['port']:.2f} s, "
                    f"failed requests {r['failed']:.0f}; the new agent started at {r['started']:.2f} s, "
                    f"its SSH link up at {r['link']:.2f} s; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        for p in busy:
            p.kill()
            p.wait()
        try:
            machines.delete(name, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    print(f"\n{args.runs} kills per variant, {args.load} busy processes, load {os.getloadavg()[0]:.1f}")
    for variant, rs in results.items():
        print(
            f"{variant:8}: engine back median {med(r['engine'] for r in rs):.2f} s, "
            f"port back median {med(r['port'] for r in rs):.2f} s (goal ≤ 2 s), "
            f"failed requests median {med(r['failed'] for r in rs):.0f}; "
            f"agent started at {med(r['started'] for r in rs):.2f} s, "
            f"link up at {med(r['link'] for r in rs):.2f} s"
        )
    for what in ("engine", "port"):
        for variant, peer in (("spare", "handover"), ("handover", "peer")):
            ratio = med(r[what] for r in results[peer]) / med(r[what] for r in results[variant])
            print(f"  {what}: {variant} is {ratio:.2f}x the speed of {peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
