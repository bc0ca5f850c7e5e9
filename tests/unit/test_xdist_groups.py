"""The two-worker layout (tests/conftest.py): under `-n 2 --dist loadgroup` a module runs whole on one worker
and every machine test on one worker. With pytest 9.2 and pytest-xdist 3.8 the groups silently did not apply
(xdist renames `item._nodeid`, which pytest 9.2 no longer reads): every module was split across workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_each_module_and_the_machine_group_run_on_one_worker() -> None:
    pytest.importorskip("xdist")
    modules = [
        "tests/privileged/test_leftovers_sweep.py",  # a module: its tests sweep each other's names if split
        "tests/privileged/test_hostagent_sshd.py",
        "tests/vm/test_run_vm.py",  # the machine group: two vm modules share one worker
        "tests/vm/test_boot_vm.py",
    ]
    # Only the unit tier: every test above is collected and scheduled, then skipped (nothing boots or sweeps).
    env = {**os.environ, "PYMACHINE_TIERS": "unit"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:randomly", "-v"]
        + modules,
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    workers: dict[str, set[str]] = defaultdict(set)
    for worker, nodeid in re.findall(r"^\[(gw\d)\] \[ *\d+%\] SKIPPED (\S+)", run.stdout, re.M):
        workers[nodeid.split("::")[0]].add(worker)
    assert set(workers) == set(modules), run.stdout
    for module in modules[:2]:
        assert len(workers[module]) == 1, (module, run.stdout)
    assert workers[modules[2]] == workers[modules[3]] and len(workers[modules[2]]) == 1, run.stdout
