"""The two-worker layout (support/xdist_layout.py, support/xdist_scheduler.py): which unit a test belongs to,
the order the units are handed out in, and where they run under pytest-xdist's own loadgroup algorithm."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.xdist_layout import (
    LATE_MACHINE_FILES,
    LATE_PREFIX,
    MACHINE_GROUP,
    SHARED_MACHINE_FIXTURES,
    group_of,
    queue_order,
)

REPO = Path(__file__).resolve().parents[2]


def test_each_test_gets_its_unit() -> None:
    assert (
        group_of("tests/privileged/test_runtime.py", uses_a_machine=False)
        == "tests/privileged/test_runtime.py"
    )
    assert group_of("tests/vm/test_machines.py", uses_a_machine=True) == MACHINE_GROUP
    assert group_of("tests/compat/test_cli.py", uses_a_machine=True) == MACHINE_GROUP
    assert (
        group_of("tests/vm/test_resume_vm.py", uses_a_machine=True)
        == LATE_PREFIX + "tests/vm/test_resume_vm.py"
    )
    assert "@" not in LATE_PREFIX  # xdist takes the group from the node id's last "@"


def test_the_machine_group_first_the_host_modules_next_the_late_files_last_heaviest_first() -> None:
    light, heavy = (LATE_PREFIX + "tests/" + f for f in (LATE_MACHINE_FILES[-1], LATE_MACHINE_FILES[0]))
    xdists = [light, "tests/unit/test_a.py", heavy, MACHINE_GROUP, "tests/privileged/test_b.py"]
    assert queue_order(xdists) == [
        MACHINE_GROUP,
        "tests/unit/test_a.py",
        "tests/privileged/test_b.py",
        heavy,
        light,
    ]
    assert queue_order(["tests/unit/test_a.py"]) == ["tests/unit/test_a.py"]


def test_a_late_file_exists_and_uses_no_shared_machine() -> None:
    """A late file on the other worker must boot only machines of its own: the session's would boot again
    there."""
    for path in LATE_MACHINE_FILES:
        source = (REPO / "tests" / path).read_text()
        used: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                used |= {a.arg for a in node.args.args + node.args.kwonlyargs}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)  # getfixturevalue("..."), usefixtures("...")
        assert not used & set(SHARED_MACHINE_FIXTURES), (path, used & set(SHARED_MACHINE_FIXTURES))


class _Worker:
    """What xdist's scheduler sees of a worker: the test indexes it is sent, in order."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent += indexes

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_group_and_the_host_modules_run_side_by_side_then_both_workers_take_late_files() -> None:
    pytest.importorskip("xdist")
    from support.xdist_scheduler import MachinesFirstScheduling
    from xdist.remote import Producer

    late = [LATE_PREFIX + "tests/" + f for f in LATE_MACHINE_FILES[:2]]
    # (node id @ group, seconds): the late files have more tests than the machine group, so xdist's own order
    # (most tests first) would hand them out first
    tests = [(f"tests/vm/test_m.py::t{i}@{MACHINE_GROUP}", 10) for i in range(5)]
    tests += [(f"tests/unit/test_h{m}.py::t{i}@tests/unit/test_h{m}.py", 1) for m in (1, 2) for i in range(3)]
    tests += [(f"{group.removeprefix(LATE_PREFIX)}::t{i}@{group}", 10) for group in late for i in range(10)]
    config = SimpleNamespace(
        getvalue=lambda name: ["2*popen"] if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=True),
    )
    sched = MachinesFirstScheduling(config, Producer("sched", enabled=False))  # type: ignore[arg-type]
    workers = [_Worker("gw0"), _Worker("gw1")]
    for w in workers:
        sched.add_node(w)  # type: ignore[arg-type]
        sched.add_node_collection(w, [t for t, _ in tests])  # type: ignore[arg-type]
    sched.schedule()
    # each worker runs what it was sent in order; the one whose test ends first reports it to the scheduler
    done = {w: 0 for w in workers}
    ends = {w: 0.0 for w in workers}
    while any(done[w] < len(w.sent) for w in workers):
        w = min(
            (w for w in workers if done[w] < len(w.sent)), key=lambda w: ends[w] + tests[w.sent[done[w]]][1]
        )
        ends[w] += tests[w.sent[done[w]]][1]
        sched.mark_test_complete(w, w.sent[done[w]])  # type: ignore[arg-type]
        done[w] += 1
    ran = {w.gateway.id: list(dict.fromkeys(tests[i][0].split("@")[1] for i in w.sent)) for w in workers}
    assert ran == {
        "gw0": [MACHINE_GROUP, late[1]],
        "gw1": ["tests/unit/test_h1.py", "tests/unit/test_h2.py", late[0]],
    }
