"""The resource saver and memory/disk back to the host, measured on one machine (direct-QEMU driver):

    python3 bench/saver.py [--runs 3] [--window 10]

1. host CPU of QEMU over `window` seconds (from /proc/PID/stat): idle and awake vs paused by the saver;
2. a docker CLI round trip (`docker version`) to an awake vs a paused machine (the wake-up's cost);
3. QEMU's RSS idle, while a container holds 500 MiB, and 30 s after it exits (the balloon's page reporting);
4. the qcow2's allocated bytes before, after loading a 100 MiB image, right after deleting it (ext4's online
   discard) and after the saver's idle pause (its fstrim).

Each number is a median of `runs`; the peers (awake machine, idle RSS, the disk before) are measured in the
same run on the same machine. The machine lives in a temporary PYMACHINE_HOME and is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.agent import busybox_tarball  # noqa: E402
from support.saver import MiB, allocated, big_image_tar, cpu_ticks, rss_bytes  # noqa: E402

NAME = "bench-saver"
TICK = os.sysconf("SC_CLK_TCK")


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


class Bench:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "m" / NAME
        self.env = {**os.environ, "PYMACHINE_HOME": str(home), "DOCKER_CONFIG": str(home / "docker")}
        self.env.pop("DOCKER_HOST", None)

    def docker(self, *args: str) -> float:
        started = time.monotonic()
        sock = f"unix://{self.dir / 'docker.sock'}"
        subprocess.run(["docker", "-H", sock, *args], env=self.env, check=True, capture_output=True)
        return time.monotonic() - started

    def control(self, op: str, **args: object) -> dict:
        from pymachine.hostvm.hostagent import control

        return control.call(self.dir / "ha.sock", op, timeout=60, **args)

    def pid(self) -> int:
        return int((self.dir / "qemu.pid").read_text())

    def paused(self) -> bool:
        return self.control("saver")["saver"]["state"] == "paused"

    def cpu_percent(self, window: float) -> float:
        pid = self.pid()
        before, started = cpu_ticks(pid), time.monotonic()
        time.sleep(window)
        return 100 * (cpu_ticks(pid) - before) / TICK / (time.monotonic() - started)

    def hog_rss(self, runs: int) -> tuple[list[float], list[float], list[float]]:
        """QEMU's RSS idle, while a container holds 500 MiB of /dev/shm, and 30 s after it was removed."""
        pid = self.pid()
        base, peak, after = [], [], []
        for i in range(runs):
            time.sleep(5)
            base.append(rss_bytes(pid))
            name = f"hog{i}"
            self.docker("run", "-d", "--name", name, "--shm-size", "600m", "pymachine/busybox", "sh", "-c",
                        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=500 && exec sleep 600")  # fmt: skip
            wait_for(lambda floor=base[-1]: rss_bytes(pid) > floor + 450 * MiB, "500 MiB resident")
            peak.append(rss_bytes(pid))
            self.docker("rm", "-f", name)
            time.sleep(30)
            after.append(rss_bytes(pid))
        return base, peak, after

    def pause(self) -> None:
        self.control("saver", timeout_s=1)
        wait_for(self.paused, "the idle pause")


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(args: argparse.Namespace) -> None:
    from pymachine.hostvm import machines

    b = Bench(Path(os.environ["PYMACHINE_HOME"]))
    machines.create(NAME, driver="qemu", home_mount=False)
    try:
        machines.start(NAME)
        b.docker("load", "-i", str(busybox_tarball()))

        awake_cpu, paused_cpu, awake_rt, paused_rt = [], [], [], []
        for _ in range(args.runs):
            b.control("saver", timeout_s=0)
            time.sleep(2)  # let the last command's work settle
            awake_cpu.append(b.cpu_percent(args.window))
            awake_rt.append(b.docker("version"))
            b.pause()
            paused_cpu.append(b.cpu_percent(args.window))
            paused_rt.append(b.docker("version"))  # wakes it
        cpu_a, cpu_p = median(awake_cpu), median(paused_cpu)
        print(f"QEMU host CPU, idle machine awake: {cpu_a:.2f} %  paused: {cpu_p:.2f} %"
              f"  (ratio paused/awake {cpu_p / max(cpu_a, 1e-9):.3f})")  # fmt: skip
        print(f"docker version, awake: {median(awake_rt):.3f} s  paused (wakes it): {median(paused_rt):.3f} s"
              f"  (wake-up adds {median(paused_rt) - median(awake_rt):.3f} s)")  # fmt: skip

        b.control("saver", timeout_s=0)
        base, peak, after = b.hog_rss(args.runs)
        idle_rss, peak_rss, after_rss = median(base), median(peak), median(after)
        print(f"QEMU RSS idle {idle_rss / MiB:.0f} MiB, during {peak_rss / MiB:.0f} MiB, 30 s after exit "
              f"{after_rss / MiB:.0f} MiB (after/idle {after_rss / idle_rss:.2f}; goal <= 1.20)")  # fmt: skip
        # the peer: the same machine with the guest's balloon driver unloaded (no free page reporting)
        from pymachine.hostvm import ssh

        assert ssh.run(NAME, "rmmod virtio_balloon")[0] == 0
        (b0,), (p0,), (a0,) = b.hog_rss(1)
        print(f"  peer without page reporting: idle {b0 / MiB:.0f} MiB, during {p0 / MiB:.0f} MiB, "
              f"30 s after exit {a0 / MiB:.0f} MiB (after/idle {a0 / b0:.2f})")  # fmt: skip
        ssh.run(NAME, "modprobe virtio_balloon")

        disk = b.dir / "disk.qcow2"
        with tempfile.TemporaryDirectory() as tmp:
            tar = big_image_tar(Path(tmp) / "big.tar")
            before = allocated(disk)
            b.docker("load", "-i", str(tar))
        loaded = allocated(disk)
        b.docker("rmi", "saver/big:1")
        time.sleep(10)  # ext4 discards at its next journal commit (5 s)
        deleted = allocated(disk)
        b.pause()  # fstrim runs before the pause
        trimmed = allocated(disk)
        print(f"qcow2 allocated: before {before / MiB:.0f} MiB, with a 100 MiB image {loaded / MiB:.0f} MiB, "
              f"deleted {deleted / MiB:.0f} MiB, after the idle pause's fstrim {trimmed / MiB:.0f} MiB "
              f"(grown by {(trimmed - before) / MiB:+.0f} MiB)")  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            machines.delete(NAME, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    with tempfile.TemporaryDirectory(prefix="pmsv", dir="/var/tmp") as home:
        os.environ["PYMACHINE_HOME"] = home
        run(args)


if __name__ == "__main__":
    main()
