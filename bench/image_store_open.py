"""Image store open benchmark: the CPU a guest agent's start spends opening a store of 50 images / 200 layers.

`ImageStore.__init__` sweeps orphan layers and checks unflushed ones (images/removal.py, images/durable.py).
This builds such a store once (as root: unpacking keeps owners), then opens it in fresh processes with two
copies of the guest agent, interleaved: `--peer` (e.g. main's guest-agent folder) and this tree's. Each open
prints the process CPU time of `ImageStore(root)` (time.process_time: user + system, not wall) and how many
JSON files it opened. Medians of --runs opens each; the load average beside them. With --agent, also the
whole agent's start on that store (tests/support/agent.py, as the privileged tier starts it): the agent
process's CPU (/proc/PID/schedstat) when it first answers /_ping.

    python bench/image_store_open.py --peer /work/main/guest-agent [--runs 15] [--agent]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "guest-agent"

OPEN = r"""
import json, sys, time
from pathlib import Path
real_open = Path.open
opened = [0]
def counting(self, *a, **kw):
    if self.suffix == ".json":
        opened[0] += 1
    return real_open(self, *a, **kw)
Path.open = counting
from pymachine_agent.images.store import ImageStore
start = time.process_time()
ImageStore(sys.argv[1])
print(json.dumps({"cpu": time.process_time() - start, "json_reads": opened[0]}))
"""


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(root: Path, images: int, layers_each: int) -> None:
    sys.path.insert(0, str(HERE))
    from pymachine_agent.images.reference import parse
    from pymachine_agent.images.store import ImageStore

    store = ImageStore(root)
    for n in range(images):
        diff_ids = []
        for k in range(layers_each):
            files = [(f"srv/{n}/{k}/f{i}", os.urandom(200)) for i in range(8)]
            diff_ids.append(store.add_layer(io.BytesIO(_tar(files)), None)["diff_id"])
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "created": f"2026-01-01T00:00:{n % 60:02d}Z",
        }
        store.add_image(json.dumps(config).encode(), tags=[parse(f"bench/img{n}:1")])


def open_once(code: Path, root: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, "-c", OPEN, str(root)], env=env, check=True, capture_output=True)
    return json.loads(out.stdout)


def agent_start_cpu(code: Path, base: Path) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from support import agent as support_agent

    support_agent.AGENT_SRC = code  # type: ignore[misc]
    agent = support_agent.start_agent(base)
    try:
        return int(Path(f"/proc/{agent.proc.pid}/schedstat").read_text().split()[0]) / 1e9
    finally:
        agent.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, help="a guest-agent folder to compare with (main's)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--layers", type=int, default=4, help="layers of each image (none shared)")
    ap.add_argument("--agent", action="store_true", help="also the whole agent's start (root)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-open-") as tmp:
        root = Path(tmp) / "images"
        build(root, args.images, args.layers)
        print(f"store: {args.images} images, {args.images * args.layers} layers")
        results: dict[str, list[dict[str, float]]] = {"peer": [], "this": []}
        for _ in range(args.runs):  # alternate: the host's load moves
            results["peer"].append(open_once(Path(args.peer), root))
            results["this"].append(open_once(HERE, root))
        for name, runs in results.items():
            cpu = statistics.median(r["cpu"] for r in runs) * 1000
            reads = statistics.median(r["json_reads"] for r in runs)
            print(f"{name:5} median CPU {cpu:6.1f} ms  json files opened {reads:.0f}")
        peer, this = (statistics.median(r["cpu"] for r in results[k]) for k in ("peer", "this"))
        print(f"this/peer CPU {this / peer:.2f}  loadavg {Path('/proc/loadavg').read_text().split()[:3]}")
        if args.agent:
            base = Path(tmp)  # the agent's store is base/state/images: the one built above
            (base / "state").mkdir()
            root.rename(base / "state" / "images")
            starts: dict[str, list[float]] = {"peer": [], "this": []}
            for _ in range(args.runs):
                starts["peer"].append(agent_start_cpu(Path(args.peer), base))
                starts["this"].append(agent_start_cpu(HERE, base))
            for name, cpus in starts.items():
                print(f"{name:5} agent start: median CPU {statistics.median(cpus) * 1000:6.1f} ms")
            print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
