"""Start benchmark: a stopped machine → its engine answering on the host, by resume (the state `stop` saved)
and by cold boot (`stop --shutdown`, then `start`), medians of N of each, interleaved in one run on one
machine; and the `stop` itself, saving vs shutting down. Goals under TCG (issue 14): resume ≤ 2 s, cold ≤ 8 s,
stop ≤ 2 s.

"Engine answering" = `GET /_ping` through the machine's forwarded docker.sock returns OK. The clock runs from
the `machines.start` call (in-process: a CLI's own ~0.4 s Python start is not counted) to that answer.

    python bench/start.py [--runs 5] [--driver libvirt|qemu] [--mount DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pymachine.hostvm import machines, paths


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


def timed_start(name: str, marks: dict[str, float]) -> float:
    t0 = time.monotonic()

    def progress(note: object) -> None:
        message = str(note)  # typed progress (StageProgress) or a plain note
        if ": ok (" in message:
            marks[message.split(": ")[1]] = time.monotonic() - t0
        elif message.startswith("cold boot:") or message.startswith("resuming"):
            marks[message] = time.monotonic() - t0

    machines.start(name, progress)
    sock = paths.machine(name).docker_socket
    deadline = time.monotonic() + 120
    while not ping(sock):
        if time.monotonic() > deadline:
            raise RuntimeError("the engine did not answer")
        time.sleep(0.02)
    return time.monotonic() - t0


def timed_stop(name: str, shutdown: bool) -> tuple[float, bool]:
    t0 = time.monotonic()
    m = machines.stop(name, shutdown=shutdown)
    return time.monotonic() - t0, m.saved_state is not None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--driver", default="libvirt")
    ap.add_argument("--mount", action="append", default=[], help="share this folder (default: none)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pmbs", dir="/var/tmp"))
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    name = f"bs-{os.getpid()}"
    resume, cold, save_stop, shut_stop = [], [], [], []
    stages: dict[str, list[float]] = {}
    try:
        machines.create(name, driver=args.driver, mounts=args.mount, home_mount=False)
        machines.start(name)
        for i in range(args.runs):
            took, saved = timed_stop(name, shutdown=False)
            if not saved:
                print("stop did not save the state (see the reason above): no resume to measure")
                return 1
            save_stop.append(took)
            marks: dict[str, float] = {}
            resume.append(timed_start(name, marks))
            if any(k.startswith("cold boot") for k in marks):
                print(f"run {i + 1}: the resume fell back to a cold boot: {marks}")
                return 1
            took, _ = timed_stop(name, shutdown=True)
            shut_stop.append(took)
            marks = {}
            cold.append(timed_start(name, marks))
            for stage, at in marks.items():
                stages.setdefault(stage, []).append(at)
            print(
                f"run {i + 1}: resume {resume[-1]:.2f} s, cold {cold[-1]:.2f} s, "
                f"stop (save) {save_stop[-1]:.2f} s, stop (shutdown) {shut_stop[-1]:.2f} s",
                flush=True,
            )
    finally:
        try:
            machines.delete(name, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    med = statistics.median
    print(
        f"\n{args.driver} driver, {args.runs} runs, shares: {args.mount or 'none'}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(f"stopped → engine answering, resume:    median {med(resume):.2f} s  (goal ≤ 2 s)")
    print(f"stopped → engine answering, cold boot: median {med(cold):.2f} s  (goal ≤ 8 s)")
    print(f"  resume is {med(cold) / med(resume):.1f}x faster than a cold boot")
    print(f"stop, saving the state:  median {med(save_stop):.2f} s  (goal ≤ 2 s)")
    print(
        f"stop, shutting down:     median {med(shut_stop):.2f} s  "
        f"(saving/shutdown {med(save_stop) / med(shut_stop):.2f})"
    )
    print("cold boot stages (done at, median since start):")
    for stage, times in stages.items():
        print(f"  {stage}: {med(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
