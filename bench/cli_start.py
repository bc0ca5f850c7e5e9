"""How long a `pymachine` command takes before it does anything, against the same command of the `docker` CLI.

Each command runs N times, pymachine and its docker peer alternating, in a fresh HOME (no machine, no docker
config) and with DOCKER_HOST pointing at a socket that does not exist (docker's `ps` then fails fast, as
pymachine's does without a machine). Prints medians, the ratio to docker, and how many modules pymachine
imported for the command (`python -X importtime`, one line a module).

    python bench/cli_start.py [-n 15] [--pymachine PATH]

PYTHONDONTWRITEBYTECODE is dropped from the commands' environment: an installed pymachine has its bytecode
cached, and without it every module is compiled again on each run (0.15 s of 0.3 s here).
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

# (what, pymachine's arguments, the docker CLI's arguments for the same thing)
CASES = (
    ("--version", ["--version"], ["--version"]),
    ("--help", ["--help"], ["--help"]),
    ("usage error", ["lst"], ["lst"]),
    ("run --help", ["run", "--help"], ["run", "--help"]),
    ("list (no machine)", ["list"], ["context", "ls"]),
    ("ps (no machine)", ["ps"], ["ps"]),
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def module_count(python: str, args: list[str], env: dict[str, str]) -> int:
    out = subprocess.run(
        [python, "-X", "importtime", "-m", "pymachine.app.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    ).stderr
    return sum(1 for line in out.splitlines() if line.startswith("import time:") and "|" in line) - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="runs of each command (default 15)")
    ap.add_argument("--pymachine", default=str(Path(sys.executable).parent / "pymachine"))
    opts = ap.parse_args()
    docker = shutil.which("docker")
    if docker is None:
        print("no docker CLI on PATH: it is the peer", file=sys.stderr)
        return 1
    python = str(Path(opts.pymachine).parent / "python")
    with tempfile.TemporaryDirectory(prefix="cli-start-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYMACHINE_", "XDG_", "DOCKER_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env |= {
            "HOME": home,
            "DOCKER_HOST": f"unix://{home}/no-docker.sock",
            "DOCKER_CONFIG": f"{home}/.docker",
        }
        bare = statistics.median(timed([python, "-c", "pass"], env) for _ in range(opts.n))
        print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
        print(f"python -c pass: {bare * 1000:.0f} ms (median of {opts.n})")
        print(f"{'command':<20} {'pymachine':>10} {'docker':>8} {'ratio':>6} {'modules':>8}")
        for what, ours, theirs in CASES:
            timed([opts.pymachine, *ours], env)  # warm: page cache and bytecode
            a, b = [], []
            for _ in range(opts.n):
                a.append(timed([opts.pymachine, *ours], env))
                b.append(timed([docker, *theirs], env))
            ma, mb = statistics.median(a), statistics.median(b)
            count = module_count(python, ours, env)
            print(f"{what:<20} {ma * 1000:8.0f}ms {mb * 1000:6.0f}ms {ma / mb:6.1f} {count:8d}")
        print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
