"""Host folders in the VM: each share transport this host can run, as a ratio to the same work on the guest's
own disk (issue 13). One machine, restarted once per transport; the work runs in the guest (python3 over
`pymachine ssh`), on a shared folder and on /var/lib (the guest's disk), native and share interleaved in
each of `--runs` rounds, medians reported:

- sequential write of 256 MiB (1 MiB writes, then fsync), and sequential read of it back;
- creating 5,000 small files (1 KiB each);
- a stat walk (os.walk + lstat) over 10,000 files in 100 folders.

Reads and walks are measured twice, and the table says which:
- cold: the guest's page, dentry and inode caches dropped first (`drop_caches`), on both sides alike, so the
  data and metadata cross the transport (virtio-blk for native, FUSE requests for virtiofs). The host's own
  cache is warm on both sides: the guest disk is a qcow2 file on the host, and virtiofsd reads host files.
- warm: the same step again at once, nothing dropped: what a dev server, `git status` or a watcher that
  re-reads the tree meets. Native serves it from the guest's caches; virtiofs (cache=always, timeout 30 s)
  from the guest's too, for names, attributes and pages looked up less than its timeout ago (see
  docs/machines.md, "virtiofs speed": host edits reach the guest's caches through the change events).

    python bench/file_sharing.py [--driver libvirt|qemu] [--mib 256] [--runs 3] [--transports virtiofs,sshfs]
                                 [--name bench] [--virtiofsd-options "-o cache=auto -o sandbox=namespace"]

`--virtiofsd-options` replaces hostvm/shares.py's VIRTIOFSD_OPTIONS for this run (to measure another
setting, e.g. an older default, against the same guest image); `--name` lets two runs go side by side.

Throughput steps are reported as share/native throughput (1.0 = as fast as the guest's disk; higher is
better); file-count steps as share/native time (1.0 = as fast; lower is better). Needs a guest image (built
on first use) and, under TCG, several minutes per transport and run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

GUEST_DISK = "/var/lib/pm-bench"

WORK = r"""
import json, os, sys, time
root, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
def timed(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t
big = os.path.join(root, "big.bin")
block = os.urandom(1 << 20)
def write():
    with open(big, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush(); os.fsync(f.fileno())
def read():
    with open(big, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
small = os.path.join(root, "small")
def create():
    os.mkdir(small)
    data = b"x" * 1024
    for i in range(5000):
        with open(os.path.join(small, f"f{i}"), "wb") as f:
            f.write(data)
tree = os.path.join(root, "tree")
for d in range(100):
    os.makedirs(os.path.join(tree, f"d{d}"), exist_ok=True)
    for i in range(100):
        open(os.path.join(tree, f"d{d}", f"f{i}"), "wb").close()
def walk():
    n = 0
    for top, dirs, files in os.walk(tree):
        for name in files:
            os.lstat(os.path.join(top, name)); n += 1
    assert n == 10000, n
out = {"write": timed(write)}
drop(); out["read"] = timed(read)
out["read_warm"] = timed(read)
out["create"] = timed(create)
drop(); out["walk"] = timed(walk)
out["walk_warm"] = timed(walk)
import shutil; shutil.rmtree(root)
print(json.dumps(out))
"""

STEPS = [
    ("write", "sequential write {mib} MiB", True),
    ("read", "sequential read {mib} MiB, cold", True),
    ("read_warm", "sequential read {mib} MiB, warm", True),
    ("create", "create 5,000 small files", False),
    ("walk", "stat walk over 10,000 files, cold", False),
    ("walk_warm", "stat walk over 10,000 files, warm", False),
]


def run_in_guest(name: str, folder: str, mib: int) -> dict[str, float]:
    from pymachine.hostvm import ssh

    script = WORK.replace("'", "'\"'\"'")
    status, out, err = ssh.run(name, f"python3 -c '{script}' {folder} {mib}", timeout=3600)
    if status != 0:
        raise SystemExit(f"bench in the guest failed ({status}): {err.decode(errors='replace')[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def mounted_over(name: str, folder: str) -> str | None:
    from pymachine.hostvm import ssh

    status, out, _ = ssh.run(name, f"awk '$2 == \"{folder}\" {{print $3}}' /proc/mounts")
    return out.decode().strip() or None if status == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--driver", default=None, help="libvirt or qemu (default: as pymachine create)")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3, help="rounds per transport; medians are reported")
    parser.add_argument("--transports", default=",".join(TRANSPORTS_ORDER), help="comma-separated")
    parser.add_argument("--name", default="bench", help="the bench machine's name (libvirt's domain name)")
    parser.add_argument("--virtiofsd-options", default=None, help="virtiofsd's options instead of ours")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pm-bench-home-", dir="/var/tmp"))
    share = Path(tempfile.mkdtemp(prefix="pm-bench-share-", dir="/var/tmp"))
    share.chmod(0o755)
    if os.geteuid() == 0:  # serve it as a normal user's folder is served (virtiofsd in a user namespace)
        os.chown(share, 1000, 1000)
    os.environ["PYMACHINE_HOME"] = str(home)
    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    from pymachine.hostvm import machines, shares

    if args.virtiofsd_options is not None:  # read when each virtiofsd starts, in this process
        shares.VIRTIOFSD_OPTIONS = tuple(shlex.split(args.virtiofsd_options))
    name = args.name
    results: dict[str, list[dict[str, float]] | str] = {}
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        machines.create(name, driver=args.driver, home_mount=False, mounts=[str(share)], progress=say)
        drv = machines.driver_for(machines.load_config(name))
        say(f"driver {drv.name}, accelerator {machines.accelerator()}, virtiofsd {shares.VIRTIOFSD_OPTIONS}")
        for transport in args.transports.split(","):
            if transport == "sync":  # a copy on the guest's disk kept in sync (last: it changes the share)
                machines.stop(name)
                machines.mount_rm(name, str(share))
                machines.mount_add(name, f"{share}:sync")
                machines.start(name, say)
                fstype = mounted_over(name, str(share))
                results["sync propagation"] = propagation(name, share)  # type: ignore[assignment]
            else:
                try:
                    shares.choose_transport(drv.capabilities, transport)
                except Exception as exc:  # noqa: BLE001 - the reason goes into the table
                    results[transport] = f"not here: {exc}"
                    continue
                machines.stop(name)
                machines.set_share_transport(name, transport)
                machines.start(name, say)
                fstype = mounted_over(name, str(share))
            if not fstype:
                results[transport] = "not mounted in the guest"
                continue
            for run in range(args.runs):  # native and share interleaved: both see the same load
                say(f"run {run + 1}/{args.runs}: native, then {transport} ({fstype})")
                native = results.setdefault(f"native/{transport}", [])
                assert isinstance(native, list)
                native.append(run_in_guest(name, GUEST_DISK, args.mib))
                results.setdefault(transport, []).append(run_in_guest(name, f"{share}/work", args.mib))  # type: ignore[union-attr]
                say(json.dumps({k: v[-1] for k, v in results.items() if isinstance(v, list)}))
    finally:
        try:
            machines.delete(name, force=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(share, ignore_errors=True)
    print(table(results, args.mib))
    return 0


TRANSPORTS_ORDER = ("virtiofs", "9p", "sshfs", "sync")


def propagation(name: str, share: Path, count: int = 1000) -> str:
    """Sync shares only: how long `count` new 1 KiB files take to cross over, host → guest and guest → host
    (from the first write to the last file seen on the other side, polled every 0.1 s)."""
    import time

    from pymachine.hostvm import ssh

    def guest_count(folder: str) -> int:
        status, out, _ = ssh.run(name, f"ls {folder} 2>/dev/null | wc -l")
        return int(out.decode().strip() or 0) if status == 0 else 0

    def until(pred) -> float:  # type: ignore[no-untyped-def]
        start = time.monotonic()
        while not pred():
            if time.monotonic() - start > 600:
                return float("nan")
            time.sleep(0.1)
        return time.monotonic() - start

    down = share / "prop-host"
    start = time.monotonic()
    down.mkdir()
    for i in range(count):
        (down / f"f{i}").write_bytes(b"x" * 1024)
    until(lambda: guest_count(str(down)) == count)
    to_guest = time.monotonic() - start
    up = f"{share}/prop-guest"
    script = (
        f"import os; os.mkdir('{up}')\nfor i in range({count}): open(f'{up}/f{{i}}', 'wb').write(b'x' * 1024)"
    )
    start = time.monotonic()
    ssh.run(name, f"python3 -c {shlex.quote(script)}")
    until(lambda: os.path.isdir(up) and len(os.listdir(up)) == count)
    to_host = time.monotonic() - start
    shutil.rmtree(down)
    shutil.rmtree(up, ignore_errors=True)
    return f"{count} new 1 KiB files cross host → guest in {to_guest:.1f} s, guest → host in {to_host:.1f} s"


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(results: dict[str, list[dict[str, float]] | str], mib: int) -> str:
    """One column per transport (its median and the ratio to the native median of the same rounds), the
    native column from the first transport's rounds."""
    cols = [t for t in results if not t.startswith("native/") and t != "sync propagation"]
    measured = [t for t in cols if isinstance(results[t], list)]
    assert measured, results
    first = results[f"native/{measured[0]}"]
    assert isinstance(first, list)
    head = ["step", "native", *cols]
    rows = [head, ["-" * len(h) for h in head]]
    for key, label, throughput in STEPS:
        row = [label.format(mib=mib), _abs(median(first, key), throughput, mib)]
        for t in cols:
            r, n = results[t], results.get(f"native/{t}")
            if isinstance(r, str) or not isinstance(n, list):
                row.append("-")
                continue
            share_t, native_t = median(r, key), median(n, key)
            ratio = native_t / share_t if throughput else share_t / native_t
            row.append(f"{_abs(share_t, throughput, mib)} = {ratio:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    runs = {t: len(v) for t, v in results.items() if isinstance(v, list) and not t.startswith("native/")}
    notes = [f"medians of {runs} rounds; cold = guest caches dropped first, warm = repeated at once"]
    notes += [f"{t}: {r}" for t, r in results.items() if isinstance(r, str)]
    return "\n".join(lines + [""] + notes)


def _abs(seconds: float, throughput: bool, mib: int) -> str:
    return f"{mib / seconds:.0f} MiB/s" if throughput else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
