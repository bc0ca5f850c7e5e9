"""`docker build` of a small multi-stage project against the real agent on this host: cold vs cached.

    python3 bench/build.py [--runs 5]

Measures, through the real docker CLI (legacy builder, the path every user takes):
  - cold build (--no-cache): every RUN in a container, every step committed;
  - cached rebuild (nothing changed): every step a cache hit; the goal is <= 1 s;
  - one-file-changed rebuild: the COPY of that file and what follows it rebuild;
and, as peers measured in the same run on the same agent, `docker run --rm busybox true` (one container's
round trip) and `docker image ls` (the CLI + API floor). Prints medians and ratios. Needs root (the agent
runs real containers); starts and stops its own agent in a temp folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.agent import BUSYBOX_REF, Agent, running_agent  # noqa: E402

DOCKERFILE = f"""\
FROM {BUSYBOX_REF} AS deps
WORKDIR /src
COPY deps.txt .
RUN mkdir -p /out/lib && for d in $(cat deps.txt); do echo "lib $d" > /out/lib/$d; done

FROM {BUSYBOX_REF} AS build
WORKDIR /src
COPY --from=deps /out/lib /out/lib
COPY src/ ./
ARG VERSION=1.0
RUN cat *.txt | wc -l > /out/lines && echo $VERSION > /out/version

FROM {BUSYBOX_REF}
LABEL org.example.bench=build
ENV APP=/app
COPY --from=build /out /app
USER nobody
CMD ["cat", "/app/version"]
"""


def make_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "deps.txt").write_text("\n".join(f"dep{i}" for i in range(20)) + "\n")
    for i in range(50):
        (root / "src" / f"file{i}.txt").write_text(f"line {i}\n" * 20)
    (root / ".dockerignore").write_text("*.tmp\n")
    return root


def timed(agent: Agent, *args: str) -> float:
    start = time.perf_counter()
    agent.docker(*args, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pm-bench-build-") as tmp,
        running_agent(Path(tmp) / "agent") as agent,
    ):
        agent.load_busybox()
        ctx = make_project(Path(tmp) / "project")
        timed(agent, "build", "-q", "-t", "bench-build", str(ctx))  # warm the agent and the cache
        cold, cached, changed, run_one, floor = [], [], [], [], []
        for i in range(args.runs):  # interleaved, so load elsewhere on the machine falls on all alike
            cold.append(timed(agent, "build", "-q", "--no-cache", "-t", "bench-build", str(ctx)))
            cached.append(timed(agent, "build", "-q", "-t", "bench-build", str(ctx)))
            (ctx / "src" / "file0.txt").write_text(f"changed {i}\n")
            changed.append(timed(agent, "build", "-q", "-t", "bench-build", str(ctx)))
            run_one.append(timed(agent, "run", "--rm", BUSYBOX_REF, "true"))
            floor.append(timed(agent, "image", "ls"))
        med = {
            "cold build (--no-cache)": statistics.median(cold),
            "cached rebuild": statistics.median(cached),
            "rebuild, one source file changed": statistics.median(changed),
            "peer: docker run --rm busybox true": statistics.median(run_one),
            "peer: docker image ls": statistics.median(floor),
        }
        print(f"median of {args.runs} runs, 3-stage project (2 RUN, 5 COPY, 51 context files)")
        for name, value in med.items():
            print(f"  {name:<38} {value:7.3f} s")
        c = med["cached rebuild"]
        print(f"  cached / cold                          {c / med['cold build (--no-cache)']:7.3f}")
        print(
            f"  cached / one container run             {c / med['peer: docker run --rm busybox true']:7.3f}"
        )
        print(f"  cached / CLI+API floor (image ls)      {c / med['peer: docker image ls']:7.3f}")
        print(f"  goal cached rebuild <= 1 s: {'met' if c <= 1.0 else 'NOT met'} on this host")


if __name__ == "__main__":
    main()
