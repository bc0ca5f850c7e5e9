"""Boot benchmark: median of N cold starts of a pymachine machine (`start` with every readiness stage, then
`ssh true`) against a peer booted in the same run from the same image and disk.

The peer is systemd as PID 1 (`init=/lib/systemd/systemd`, plain QEMU) when the image has systemd; the guest
image has none (it boots a tiny init), so the peer is then the same image booted by plain QEMU with no
readiness stages or agents, timed to the same `ssh true`. The script says which peer it measured.

    python bench/boot.py [--runs 5] [--driver libvirt|qemu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pymachine.hostvm import machines, ssh  # noqa: E402
from pymachine.hostvm.drivers.qemu import QemuDriver  # noqa: E402


def ssh_true(name: str, deadline: float, port: int | None = None) -> None:
    while True:
        try:
            client = ssh.connect(name, port=port, timeout=10)
            try:
                status = ssh.exec_command(client, "true")[0]
            finally:
                client.close()
            if status == 0:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


STAGE_TIMES: list[dict[str, float]] = []  # per run: stage name -> seconds since `start` began, at its "ok"


def pymachine_start(name: str) -> tuple[float, float]:
    """(seconds to `ssh true` after a full start, seconds until the 'ssh auth' stage passed)."""
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def progress(message: str) -> None:
        if message.endswith(")") and ": ok (" in message:
            marks[message.split(": ")[1]] = time.monotonic() - t0

    machines.start(name, progress)
    ssh_true(name, time.monotonic() + 60)
    STAGE_TIMES.append(marks)
    return time.monotonic() - t0, marks.get("ssh auth", float("nan"))


def peer_start(name: str, init: str | None) -> float:
    """Plain QEMU on the machine's own disk and seed; timed to the first `ssh true` (banner-gated)."""
    cfg = machines.load_config(name)
    port = machines.pick_port(name, None)
    spec = machines.vm_spec(cfg, port, machines.accelerator())
    if init:
        spec = replace(spec, cmdline=spec.cmdline.replace("init=/sbin/pymachine-init", f"init={init}"))
    driver = QemuDriver()
    t0 = time.monotonic()
    driver.start(spec)
    try:
        deadline = time.monotonic() + 600
        if not ssh.wait_banner(port, deadline):
            raise RuntimeError("peer: no SSH banner")
        ssh_true(name, deadline, port=port)
        return time.monotonic() - t0
    finally:
        driver.force_stop(name)
        driver.cleanup(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--driver", default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pm3bench", dir="/var/tmp"))
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    name = "bench"
    ours: list[float] = []
    ours_ssh: list[float] = []
    peer: list[float] = []
    try:
        machines.create(name, driver=args.driver)
        machines.start(name)  # warm the page cache and let the guest finish its first-boot work
        has_systemd = ssh.run(name, "test -x /lib/systemd/systemd")[0] == 0
        init = "/lib/systemd/systemd" if has_systemd else None
        peer_label = "systemd as PID 1 (plain QEMU)" if has_systemd else "plain QEMU, same image, no stages"
        machines.stop(name)
        for i in range(args.runs):
            full, to_ssh = pymachine_start(name)
            ours.append(full)
            ours_ssh.append(to_ssh)
            machines.stop(name)
            peer.append(peer_start(name, init))
            print(f"run {i + 1}: pymachine {full:.2f} s (ssh auth at {to_ssh:.2f} s), peer {peer[-1]:.2f} s")
    finally:
        try:
            machines.delete(name, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    m_ours, m_peer = statistics.median(ours), statistics.median(peer)
    print(f"pymachine start -> ssh true: median {m_ours:.2f} s over {len(ours)} cold starts")
    print(f"peer [{peer_label}]: median {m_peer:.2f} s")
    print(f"pymachine until its 'ssh auth' stage passed: median {statistics.median(ours_ssh):.2f} s")
    for stage in STAGE_TIMES[0] if STAGE_TIMES else ():
        done = statistics.median(t[stage] for t in STAGE_TIMES if stage in t)
        print(f"  stage '{stage}' done at: median {done:.2f} s")
    print(f"ratio pymachine / peer: {m_ours / m_peer:.2f}x")
    print(f"ratio pymachine (to ssh auth) / peer: {statistics.median(ours_ssh) / m_peer:.2f}x")
    if not has_systemd:
        print("note: the image has no systemd, so this is not the issue's systemd comparison: it shows what")
        print(
            "      pymachine's readiness stages (guest agent, host agent) add over a bare boot of the image"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
