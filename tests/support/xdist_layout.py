"""The two-worker layout of `pytest -n 2 --dist loadgroup` (tests/conftest.py): which scheduling unit a test
belongs to, and the order in which pytest-xdist hands the units out (support/xdist_scheduler.py). Pure, so
that tests/unit/test_xdist_layout.py checks it without xdist or a machine.

- MACHINE_GROUP: every test that drives one of the session's shared machines (the vm tier's `session_machine`
  and `hostagent_machine`), the compat tier (one session agent) and the GUI test that starts a machine. One
  unit, handed out first: one worker runs it in file order from the start, each shared machine booted once.
- LATE_MACHINE_FILES: vm files that boot machines of their own (module fixtures) and share nothing with other
  files. Each file is a unit of its own, handed out after every host-tier module, heaviest first: the worker
  that ran the host tiers takes them when it is done with those, and the first worker joins in when it has
  finished MACHINE_GROUP, so both end at about the same time.
- Every other test: a unit per module (a module fixture runs once), in xdist's order.
"""

from __future__ import annotations

from collections.abc import Iterable

MACHINE_GROUP = "machines"
LATE_PREFIX = "late-machine:"  # + the module's node id; no "@" (xdist splits the group off the id at "@")

# Paths under tests/, heaviest first (seconds of setup+call+teardown in CI at 2026-12-06 14:00, one machine
# at a time beside the host tiers): the largest go first so the last units handed out are short.
# Not here, though self-contained: vm/test_remote_libvirt.py, whose teardown prunes base volumes from
# libvirt's shared storage pool; vm/test_image_crash_vm.py, whose boot after QEMU's kill -9 did not reach sshd
# in ~4 min once (CI, 2026-12-06 18:00, beside another worker's machine; cause not found: the console log went
# with the run's temporary folder, which a failed start now prints), and passed alone and beside another
# machine right after.
LATE_MACHINE_FILES = (
    "vm/test_resume_vm.py",  # 307 s
    "vm/test_cluster_vm.py",  # 273
    "vm/test_shares_transports.py",  # 245
    "vm/test_faults_host.py",  # 159
    "vm/test_saver_vm.py",  # 138
    "vm/test_shares_sync_vm.py",  # 98
    "vm/test_engine_serial_vm.py",  # 80
    "vm/test_boot_kernel_gate_vm.py",  # 65
    "vm/test_runtime_vm.py",  # 63
    "vm/test_stop_robust_vm.py",  # 60
    "vm/test_image_boot.py",  # 40
    "vm/test_machine_settings_vm.py",  # 29
    "vm/test_faults_race.py",  # 27
)
# What a late file must not use: a session machine would boot once more on the other worker (minutes of CPU
# under TCG) and stay up to the end of that worker's run.
SHARED_MACHINE_FIXTURES = ("session_machine", "hostagent_machine", "ha_vm", "machine")

_LATE_RANK = {f"tests/{path}": rank for rank, path in enumerate(LATE_MACHINE_FILES)}


def group_of(module: str, uses_a_machine: bool) -> str:
    """The xdist_group of a test in `module` (its node id's path, "tests/vm/test_x.py")."""
    if not uses_a_machine:
        return module
    if module in _LATE_RANK:
        return LATE_PREFIX + module
    return MACHINE_GROUP


def queue_order(scopes: Iterable[str]) -> list[str]:
    """The units in the order to hand them out: MACHINE_GROUP first, the host modules in the order given
    (xdist sorts them by test count, most first), then the late machine files heaviest first."""
    scopes = list(scopes)
    first = [s for s in scopes if s == MACHINE_GROUP]
    late = sorted((s for s in scopes if s.startswith(LATE_PREFIX)), key=_late_rank)
    host = [s for s in scopes if s != MACHINE_GROUP and not s.startswith(LATE_PREFIX)]
    return first + host + late


def _late_rank(scope: str) -> int:
    return _LATE_RANK.get(scope.removeprefix(LATE_PREFIX), len(_LATE_RANK))
