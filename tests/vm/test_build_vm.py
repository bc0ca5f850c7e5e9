"""`docker build` inside a real machine (through the host agent's forwarded socket): a multi-stage build,
its cached rebuild and a one-file change; prints the times (the goal of a <= 1 s cached rebuild is checked by
bench/build.py, never asserted here)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, env_of, hostagent_machine  # noqa: F401 - session fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.fixture
def vm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    machine: VmMachine = request.getfixturevalue("hostagent_machine")
    with env_of(machine):
        yield machine
    machine.remove_all_containers()


def test_multi_stage_build_cache_and_change_in_the_vm(vm: VmMachine, tmp_path: Path) -> None:
    from build import make_project  # bench/build.py: the same project the bench measures

    ctx = make_project(tmp_path / "project")
    timings = {}
    for label in ("cold", "cached"):
        start = time.perf_counter()
        out = vm.docker("build", "-t", "vm-build", str(ctx)).stdout
        timings[label] = time.perf_counter() - start
        steps = re.split(r"^Step ", out, flags=re.M)[1:]
        if label == "cached":
            assert all(" ---> Using cache" in s for s in steps if not s.split(" : ")[1].startswith("FROM")), (
                out
            )
    assert vm.docker("run", "--rm", "vm-build").stdout == "1.0\n"
    (ctx / "src" / "file0.txt").write_text("changed\n")
    start = time.perf_counter()
    out = vm.docker("build", "-t", "vm-build", str(ctx)).stdout
    timings["one file changed"] = time.perf_counter() - start
    assert "Running in" in out  # the RUN after the changed COPY ran again
    assert vm.docker("run", "--rm", "vm-build", "cat", "/app/lines").stdout.strip() == str(49 * 20 + 1)
    print("build in the VM: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
