"""Test tiers: every test's tier comes from its folder; tiers this machine cannot run are skipped with a
reason, and the run ends with one line per skipped tier saying why."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from support import SHARED_CACHE, xdist_layout

TIERS = ("unit", "privileged", "vm", "gui", "compat")
REPO = Path(__file__).resolve().parent.parent


@cache
def tier_unavailable(tier: str) -> str | None:
    """Why `tier` cannot run on this machine, or None when it can."""
    wanted = os.environ.get("PYMACHINE_TIERS")
    if wanted and tier not in wanted.split(","):
        return f"not in PYMACHINE_TIERS={wanted}"
    if tier == "unit":
        return None
    if tier in ("privileged", "compat"):
        if sys.platform != "linux" or os.geteuid() != 0:
            return "needs root on Linux (real namespaces, overlayfs, veth)"
        probe = subprocess.run(
            ["unshare", "--pid", "--mount", "--net", "--fork", "true"], capture_output=True
        )
        if probe.returncode != 0:
            return "this host cannot create namespaces: " + probe.stderr.decode(errors="replace").strip()
        if tier == "compat" and not shutil.which("docker"):
            return "the docker CLI is not installed (apt-get install docker-cli or docker.io)"
        return None
    if tier == "vm":
        for tool in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs"):
            if not shutil.which(tool):
                return f"'{tool}' is missing: run packaging/install.sh"
        return None
    if tier == "gui":
        if importlib.util.find_spec("PySide6") is None:
            return "PySide6 is not installed (pip install 'pymachine[gui]')"
        return None
    return f"unknown tier {tier}"


def _tier_of(item: pytest.Item) -> str:
    rel = Path(str(item.fspath)).resolve().relative_to(REPO / "tests")
    return rel.parts[0] if rel.parts and rel.parts[0] in TIERS else "unit"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove the nft tables and bridges that test agents of killed runs left (support/leftovers.py): those of
    a living session stay. Only where the tiers that make them run (root), and once per run: under xdist the
    controller sweeps before it starts the workers, which do not."""
    if hasattr(session.config, "workerinput"):  # an xdist worker (not its environment: a pytest it starts)
        return
    if tier_unavailable("privileged") and tier_unavailable("compat"):
        return
    from support import leftovers

    removed = leftovers.sweep()
    if removed:
        print(f"\nremoved leftovers of killed test runs: {', '.join(removed)}", file=sys.stderr)


# The two-worker layout (`-n 2 --dist loadgroup`, pytest-xdist; support/xdist_layout.py says which test goes
# where). Machines are module- or session-scoped fixtures (one boot, tests in order), so a module runs whole
# on one worker, and every test that drives one of the session's shared machines (vm/conftest.py, the compat
# tier's agent, the GUI test that starts one) is in one group, MACHINE_GROUP, run on one worker in file order.
# The vm files that boot machines of their own are a unit each (LATE_MACHINE_FILES); every other test is
# grouped by its module (an agent, a built .deb, a pristine root). support/xdist_scheduler.py hands out the
# machine group first, the host modules next, the late machine files last: one worker runs the machine group
# while the other runs the host tiers, then both take the late files. In CI on this 2-core host (TCG) the
# machine tests as one group took 2,601 s while the host tiers' worker sat idle for the last 28 min; with the
# late files split off, 1,915 s, the workers' last tests 36 s apart (README.md "Tests").


def uses_a_machine(item: pytest.Item) -> bool:
    """Boots or drives a real machine (QEMU): the vm tier, the GUI test that starts one (its module carries
    the vm marker), and the compat tier (one session agent for the whole tier, which each worker would start
    anew; a PYMACHINE_COMPAT_DOCKER_HOST run points it at a machine)."""
    return _tier_of(item) in ("vm", "compat") or item.get_closest_marker("vm") is not None


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: without xdist nobody calls it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadgroup":
        return None  # xdist's own
    from support.xdist_scheduler import MachinesFirstScheduling

    return MachinesFirstScheduling(config, log)  # type: ignore[arg-type]


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_layout.group_of(item.nodeid.split("::")[0], uses_a_machine(item))
        item.add_marker(pytest.mark.xdist_group(group))  # a plain marker without xdist
        tier = _tier_of(item)
        item.add_marker(getattr(pytest.mark, tier))
        reason = tier_unavailable(tier)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"{tier} tier skipped: {reason}"))


class _GroupNodeIds:
    """pytest-xdist (3.8) puts a test in its `xdist_group` by renaming `item._nodeid` to `<id>@<group>`, which
    pytest 9.2 no longer reads (a node's id is `item._id` now): `--dist loadgroup` then split every group
    across both workers without a word (seen under load: test_leftovers_sweep.py's tests ran on both workers
    at once and swept each other's names; test_remote_ssh.py's module machine was made twice). Where xdist's
    renaming did not take, this names the group in the id the way this pytest reads it."""

    @pytest.hookimpl(trylast=True)  # after xdist's own hook on the worker
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not config.getvalue("loadgroup"):  # set on xdist's workers for --dist loadgroup
            return
        for item in items:
            groups = sorted({str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args})
            suffix = "@" + "_".join(groups)
            if groups and not item.nodeid.endswith(suffix):
                group_nodeid(item, item.nodeid + suffix)


def group_nodeid(item: pytest.Item, nodeid: str) -> None:
    if hasattr(item, "_id"):  # pytest >= 9.2: a structured id, parsed back from the string as pytest does
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(_GroupNodeIds(), "pymachine-group-nodeids")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.section("pymachine test tiers")
    for tier in TIERS:
        reason = tier_unavailable(tier)
        terminalreporter.write_line(f"{tier:<11} {'ran' if reason is None else 'SKIPPED: ' + reason}")


@pytest.fixture
def pymachine_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PYMACHINE_HOME (short path: it holds unix sockets)."""
    home = Path(tmp_path_factory.mktemp("pmh"))
    monkeypatch.setenv("PYMACHINE_HOME", str(home))
    monkeypatch.setenv("PYMACHINE_CACHE", str(SHARED_CACHE))
    return home
