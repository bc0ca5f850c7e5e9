"""The guest agent's own CPU per byte of `docker load`, measured in the guest (under TCG), no channel in it.

    python bench/guest_load.py --machine NAME --old /work/main --mib 40 --repeat 3 [--profile 25]

copies two guest-agent trees (`--old`, and this checkout's as "new") and this script into the machine, then
runs `guest_load.py serve` there: per round and tree (alternating, old first on even rounds) a fresh process
listens on the guest's loopback, a forked sender POSTs a random one-layer image (the archive
bench/engine_path.py loads) as `docker load` does, chunked in 32 KiB chunks (Go's io.Copy buffer), and the
receiving thread runs the agent's real path: api.http's request parser and BodyFile, images.store's load
into a store on the agent's own disk (/var/lib/pymachine). Printed: CPU seconds of that process, all its
threads (time.process_time: the other helpers' load on the host stretches wall time, much less the guest's
CPU seconds) and MB/s of wall time, medians per tree; with --profile, cProfile's top N functions (by own
time) of the last round of each tree.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

GUEST_DIR = "/var/lib/pymachine/bench-guest-load"  # the agent's own disk: a store there writes where it would
CHUNK = 32 * 1024


# -- in the guest ------------------------------------------------------------------------------------------


def _send(port: int, archive: str) -> None:
    """The client's side (a forked process): the archive as a chunked POST /images/load, then the reply."""
    with socket.create_connection(("127.0.0.1", port)) as s, open(archive, "rb") as f:
        s.sendall(b"POST /v1.43/images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\n")
        s.sendall(b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n")
        while data := f.read(CHUNK):
            s.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        while s.recv(65536):
            pass


def serve(tree: str, archive: str, store_dir: str, profile: int) -> None:
    """One load through the agent tree `tree`; prints `cpu_s wall_s` (and the profile) on stdout."""
    sys.path.insert(0, tree)
    from pymachine_agent.api.http import BodyFile, Connection
    from pymachine_agent.images.store import ImageStore

    store = ImageStore(store_dir)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    if os.fork() == 0:  # the sender: its CPU is not counted (another process)
        try:
            _send(port, archive)
        finally:
            os._exit(0)
    sock, _ = lsock.accept()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    conn = Connection(sock, [])
    req = conn.read_request()
    assert req is not None
    body = BodyFile(req)
    loaded = store.load(body)
    body.drain()
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    conn.send_json(200, {"loaded": loaded})
    sock.close()
    os.wait()
    print(f"{cpu:.3f} {wall:.3f}")
    if prof:
        import pstats

        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(profile)
        print(out.getvalue())


def guest_main(args: argparse.Namespace) -> None:
    serve(args.tree, args.archive, args.store, args.profile)


# -- on the host -------------------------------------------------------------------------------------------


def _ssh(machine: str, script: str, stdin: bytes | None = None) -> str:
    argv = [sys.executable, "-m", "pymachine.app.cli", "ssh", machine, "--", "sh", "-c", script]
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if done.returncode:
        raise SystemExit(f"in the guest: {script[:80]}: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode()


def _bundle(trees: dict[str, Path]) -> bytes:
    here = Path(__file__).resolve()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, tree in trees.items():
            tar.add(tree / "guest-agent" / "pymachine_agent", f"{name}/pymachine_agent")
        tar.add(here, "guest_load.py")
        tar.add(here.parent.parent / "tests" / "support" / "random_image.py", "random_image.py")
    return buf.getvalue()


def host_main(args: argparse.Namespace) -> None:
    trees = {"old": Path(args.old).resolve(), "new": Path(__file__).resolve().parent.parent}
    d = GUEST_DIR
    _ssh(args.machine, f"rm -rf {d} && mkdir -p {d} && tar -xzf - -C {d}", _bundle(trees))
    cpu: dict[str, list[float]] = {t: [] for t in trees}
    speed: dict[str, list[float]] = {t: [] for t in trees}
    size = 0
    try:
        for r in range(args.repeat):
            archive = f"{d}/image{r}.tar"
            make = f"import sys; sys.path.insert(0, '{d}'); from random_image import random_image_archive"
            make += f" as m; from pathlib import Path; m(Path('{archive}'), {args.mib << 20}, 'bench-gl:{r}')"
            _ssh(args.machine, f'python3 -c "{make}"')
            size = int(_ssh(args.machine, f"stat -c %s {archive}"))
            for tree in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                last = r == args.repeat - 1
                out = _ssh(
                    args.machine,
                    f"rm -rf {d}/store && python3 {d}/guest_load.py serve --tree {d}/{tree}"
                    f" --archive {archive} --store {d}/store --profile {args.profile if last else 0}",
                )
                first, _, rest = out.partition("\n")
                c, w = (float(x) for x in first.split())
                cpu[tree].append(c)
                speed[tree].append(size / w / 1e6)
                print(f"round {r + 1} {tree}: {c:.2f} s CPU, {size / w / 1e6:.1f} MB/s", file=sys.stderr)
                if rest.strip():
                    print(f"--- profile, {tree}, round {r + 1}\n{rest}", file=sys.stderr)
            _ssh(args.machine, f"rm -f {archive}")
    finally:
        _ssh(args.machine, f"rm -rf {d}")
    print(f"\nguest agent's load path, {size / 1e6:.1f} MB archive × {args.repeat} per tree (in the guest)")
    print(f"{'tree':5} {'CPU s':>7} {'CPU s/100 MB':>13} {'MB/s':>7}")
    for tree in trees:
        c, s = statistics.median(cpu[tree]), statistics.median(speed[tree])
        print(f"{tree:5} {c:>7.2f} {c / size * 1e8:>13.2f} {s:>7.1f}")
    ratio = statistics.median(cpu["old"]) / statistics.median(cpu["new"])
    faster = statistics.median(speed["new"]) / statistics.median(speed["old"])
    print(f"new / old: {ratio:.2f}× less CPU per byte, {faster:.2f}× MB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    g = sub.add_parser("serve", help="(in the guest) one load through one agent tree")
    g.add_argument("--tree", required=True)
    g.add_argument("--archive", required=True)
    g.add_argument("--store", required=True)
    g.add_argument("--profile", type=int, default=0)
    parser.add_argument("--machine", help="a running local machine of this PYMACHINE_HOME")
    parser.add_argument("--old", default="/work/main", help="the checkout to compare against")
    parser.add_argument("--mib", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="cProfile's top N of each tree's last round")
    args = parser.parse_args()
    if args.cmd == "serve":
        guest_main(args)
    elif not args.machine:
        parser.error("--machine NAME: a running machine")
    else:
        host_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
