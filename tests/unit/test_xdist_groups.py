"""The two-worker layout (tests/conftest.py) under real pytest-xdist: a module runs whole on one worker, the
machine group too, and the units are handed out in the layout's order. With pytest 9.2 and pytest-xdist 3.8
the groups silently did not apply (xdist renames `item._nodeid`, which pytest 9.2 no longer reads): every
module was split across workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def xdist_run(workers: int, modules: list[str]) -> subprocess.CompletedProcess[str]:
    """`pytest -n WORKERS --dist loadgroup -v MODULES` in the unit tier only: every test is collected and
    scheduled, and those of other tiers are skipped (nothing boots or sweeps)."""
    pytest.importorskip("xdist")
    env = {**os.environ, "PYMACHINE_TIERS": "unit"}
    args = ["-n", str(workers), "--dist", "loadgroup", "-p", "no:randomly", "-v", *modules]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_each_module_and_the_machine_group_run_on_one_worker() -> None:
    modules = [
        "tests/privileged/test_leftovers_sweep.py",  # a module: its tests sweep each other's names if split
        "tests/privileged/test_hostagent_sshd.py",
        "tests/vm/test_run_vm.py",  # the machine group: two vm modules share one worker
        "tests/vm/test_boot_vm.py",
    ]
    run = xdist_run(2, modules)
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, nodeid in re.findall(r"^\[(gw\d)\] \[ *\d+%\] SKIPPED (\S+)", run.stdout, re.M):
        workers[nodeid.split("::")[0]].add(worker)
    assert set(workers) == set(modules), run.stdout
    for module in modules[:2]:
        assert len(workers[module]) == 1, (module, run.stdout)
    assert workers[modules[2]] == workers[modules[3]] and len(workers[modules[2]]) == 1, run.stdout


def test_xdist_hands_out_the_machine_group_then_the_host_modules_then_the_late_machine_files() -> None:
    """The conftest's scheduler (support/xdist_scheduler.py) is the one xdist uses: one worker runs the units
    in the order it is handed them. xdist's own order would run the late file first: it has the most tests."""
    late, host, group = (
        "tests/vm/test_shares_transports.py",
        "tests/unit/test_globmatch.py",
        "tests/vm/test_machines.py",
    )
    run = xdist_run(1, [late, host, group])
    order = re.findall(r"^\[gw0\] \[ *\d+%\] (?:PASSED|SKIPPED) (\S+?)::", run.stdout, re.M)
    assert list(dict.fromkeys(order)) == [group, host, late], run.stdout
