"""create + start + wait of `true` in a busybox rootfs: pymachine's runtime vs crun and runc, same rootfs.

    python3 bench/container_start.py [--runs 20]          # on this host
    python3 bench/container_start.py --vm [--runs 20]     # inside a booted guest (pure cgroup v2)

Prints the median of each and the ratios. Rounds interleave the three runtimes so that load from other
processes on the machine falls on all of them alike. Ours is measured in-process (as the agent calls it:
Runtime.create + start + wait; remove afterwards, untimed); crun and runc as the `run` command on an OCI
bundle (their create + start + wait + delete), which is what dockerd/containerd pay per container. Ours mounts
an overlayfs of the layer (Docker's way); crun and runc get the same folder as a plain root.

With --vm the guest image is booted with plain QEMU (tests/support/guestboot.py); crun and runc are copied in
from this host's Debian packages (same Debian release as the guest, so their libraries fit) and the bench runs
there, where every runtime creates a cgroup v2 per container.

On a cgroup v1/hybrid host (like the development machine) no runtime gets a cgroup: ours degrades to none,
crun runs with --cgroup-manager=disabled (and a private mount namespace that hides the hybrid cgroup2 mount,
which crun refuses), and runc, which cannot run without cgroups, creates v1 cgroups under pymachine-bench/.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.rootfs import build_busybox_rootfs  # noqa: E402

from pymachine_agent.runtime import ContainerSpec, Runtime  # noqa: E402
from pymachine_agent.runtime.cgroups import is_v2  # noqa: E402


def hide_hybrid_cgroup2() -> None:
    """crun refuses hybrid cgroups even when told to use none; a private mount namespace for this process
    and its children hides the extra cgroup2 mount (nothing changes for the rest of the machine)."""
    if is_v2() or not os.path.ismount("/sys/fs/cgroup/unified"):
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.unshare(0x00020000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", "/sys/fs/cgroup/unified"], check=True)


def make_bundle(root: Path, rootfs: Path, tool: str) -> Path:
    bundle = root / f"bundle-{tool}"
    bundle.mkdir()
    subprocess.run([tool, "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["linux"]["cgroupsPath"] = "pymachine-bench/c"
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def time_oci(tool: str, bundle: Path, v1: bool) -> float:
    cmd = [tool]
    if tool == "crun" and v1:
        cmd.append("--cgroup-manager=disabled")
    cid = "b" + uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "run", "--bundle", str(bundle), cid], check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def time_ours(rt: Runtime, layer: Path) -> float:
    cid = uuid.uuid4().hex * 2
    t0 = time.perf_counter()
    rt.create(ContainerSpec(id=cid, name=cid[:12], layers=[str(layer)], argv=["true"], network="none"))
    rt.start(cid)
    code = rt.wait(cid).exit_code
    elapsed = time.perf_counter() - t0
    assert code == 0, f"`true` exited {code}"
    rt.remove(cid)
    return elapsed


def run_in_vm(runs: int) -> None:
    """Boot the guest, copy this bench, busybox, crun and runc (with their libraries) in, run it there."""
    from support.guestboot import boot_guest

    from pymachine.hostvm import image

    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    manifest = image.ensure_image()
    libs: set[str] = set()
    for tool in ("/usr/bin/crun", shutil.which("runc") or "/usr/sbin/runc"):
        out = subprocess.run(["ldd", tool], capture_output=True, text=True, check=True).stdout
        libs |= {p.split("=>")[1].split("(")[0].strip() for p in out.splitlines() if "=> /" in p}
    libs = {lib for lib in libs if "/libc.so" not in lib}
    with (
        tempfile.TemporaryDirectory(prefix="pmbenchvm-") as tmp,
        boot_guest(manifest, Path(tmp), memory_mib=1024, cpus=2, boot_timeout=900) as guest,
    ):
        sftp = guest.ssh().open_sftp()
        for d in ("/root/b", "/root/b/bench", "/root/b/tests", "/root/b/tests/support"):
            sftp.mkdir(d)
        sftp.put(__file__, "/root/b/bench/container_start.py")
        sftp.put(str(REPO / "tests/support/rootfs.py"), "/root/b/tests/support/rootfs.py")
        sftp.put(str(REPO / "tests/support/__init__.py"), "/root/b/tests/support/__init__.py")
        sftp.put("/bin/busybox", "/bin/busybox")
        sftp.chmod("/bin/busybox", 0o755)
        for tool in ("/usr/bin/crun", shutil.which("runc") or "/usr/sbin/runc"):
            sftp.put(tool, "/usr/local/bin/" + os.path.basename(tool))
            sftp.chmod("/usr/local/bin/" + os.path.basename(tool), 0o755)
        for lib in libs:
            sftp.put(os.path.realpath(lib), "/usr/local/lib/" + os.path.basename(lib))
        sftp.close()
        res = guest.run(
            f"ldconfig && cd /root/b && python3 bench/container_start.py --runs {runs}", timeout=3600
        )
        print("(inside the guest VM, QEMU TCG)")
        print(res.stdout + res.stderr, end="")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--vm", action="store_true", help="boot the guest image and run the bench inside it")
    args = ap.parse_args()
    if args.vm:
        run_in_vm(args.runs)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, mounts)")
    v1 = not is_v2()
    hide_hybrid_cgroup2()
    peers = [t for t in ("crun", "runc") if shutil.which(t)]
    with tempfile.TemporaryDirectory(prefix="pmbench-") as tmp:
        root = Path(tmp)
        layer = build_busybox_rootfs(root / "rootfs")
        bundles = {t: make_bundle(root, layer, t) for t in peers}
        rt = Runtime(root / "state")
        times: dict[str, list[float]] = {"pymachine": [], **{t: [] for t in peers}}
        try:
            for t in ("pymachine", *peers):  # warm-up: page cache, the zygote, binaries
                time_ours(rt, layer) if t == "pymachine" else time_oci(t, bundles[t], v1)
            for _ in range(args.runs):
                times["pymachine"].append(time_ours(rt, layer))
                for t in peers:
                    times[t].append(time_oci(t, bundles[t], v1))
        finally:
            rt.close()
            # runc leaves its (empty) parent cgroup behind: remove what it made, deepest first.
            cg = Path("/sys/fs/cgroup")
            for parent in [*cg.glob("pymachine-bench"), *cg.glob("*/pymachine-bench")]:
                for d in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    d.rmdir()
                parent.rmdir()
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"container create+start+wait of `true`, median of {args.runs} (load average {load:.1f}, "
          f"cgroup {'v1/hybrid: no limits' if v1 else 'v2'}):")  # fmt: skip
    for k, v in med.items():
        print(f"  {k:<10} {v:7.1f} ms   (min {min(times[k]) * 1000:.1f}, max {max(times[k]) * 1000:.1f})")
    for t in peers:
        print(f"  ratio pymachine/{t}: {med['pymachine'] / med[t]:.2f}x")


if __name__ == "__main__":
    main()
