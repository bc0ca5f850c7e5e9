"""The seccomp compiler without a kernel: compiled programs run through a classic-BPF interpreter (below) on
sample seccomp_data, and their verdicts are checked against Docker's profile and against a direct evaluation
of the profile's rules (seccomp.resolve), for every syscall number of both architectures."""

from __future__ import annotations

import copy
import errno
import json
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pymachine_agent.runtime import capabilities, seccomp
from pymachine_agent.runtime.seccomp import ProfileError

REPO = Path(__file__).resolve().parents[2]
ALLOW = seccomp.RET_ALLOW
EPERM = seccomp.RET_ERRNO | errno.EPERM
ENOSYS = seccomp.RET_ERRNO | errno.ENOSYS
DEFAULT_CAPS = capabilities.resolve([], [])
ALL_CAPS = (1 << len(capabilities.CAP_NAMES)) - 1
KERNEL = (6, 1)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_THREAD_FLAGS = 0x10000000, 0x00020000, 0x003D0F00


def cap(*names: str) -> int:
    return DEFAULT_CAPS | sum(1 << capabilities.CAP_NAMES.index(n) for n in names)


def run_bpf(prog: list[tuple[int, int, int, int]], nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """A classic-BPF interpreter for the instructions the compiler emits (and nothing else)."""
    args = (*args, 0, 0, 0, 0, 0, 0)[:6]
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *args)
    a, pc, steps = 0, 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        steps += 1
        assert steps <= len(prog), "classic BPF only jumps forward"
        if code == seccomp.LD_ABS:
            a = struct.unpack_from("<I", data, k)[0]
        elif code == seccomp.AND_K:
            a &= k
        elif code == seccomp.JA:
            pc += k
        elif code in (seccomp.JEQ, seccomp.JGT, seccomp.JGE):
            hit = {seccomp.JEQ: a == k, seccomp.JGT: a > k, seccomp.JGE: a >= k}[code]
            pc += jt if hit else jf
        elif code == seccomp.RET:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def verdict(profile: object, machine: str, name: str, *args: int, mask: int = DEFAULT_CAPS) -> int:
    prog = seccomp.compile_profile(profile, mask, machine, KERNEL)
    nr = seccomp.syscall_table(machine)[name]
    return run_bpf(prog, nr, seccomp.ARCHES[machine][0], args)


def reference(profile: object, machine: str, mask: int) -> Callable[[int, tuple[int, ...]], int]:
    """What the profile means, evaluated directly: the compiler must agree with this."""
    caps = {f"CAP_{n}" for i, n in enumerate(capabilities.CAP_NAMES) if mask >> i & 1}
    default, rules = seccomp.resolve(profile, caps, machine, KERNEL)
    top = max(seccomp.syscall_table(machine).values())
    return lambda nr, args: _reference(default, rules, top, nr, args)


def _reference(default: int, rules: dict, top: int, nr: int, args: tuple[int, ...]) -> int:
    these = rules.get(nr, [])
    plain = [r for r in these if not r.conds]
    if plain:
        return plain[0].ret
    for rule in these:
        if all(holds(c, (*args, 0, 0, 0, 0, 0, 0)[c.index]) for c in rule.conds):
            return rule.ret
    if nr > top and default != ALLOW:
        return ENOSYS
    return default


def holds(c: seccomp.Cond, v: int) -> bool:
    return {
        "SCMP_CMP_NE": v != c.value,
        "SCMP_CMP_LT": v < c.value,
        "SCMP_CMP_LE": v <= c.value,
        "SCMP_CMP_EQ": v == c.value,
        "SCMP_CMP_GE": v >= c.value,
        "SCMP_CMP_GT": v > c.value,
        "SCMP_CMP_MASKED_EQ": v & c.value == c.value_two,
    }[c.op]


DOCKER = seccomp.default_profile()


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_dockers_default_profile(machine: str) -> None:
    v = lambda name, *a, mask=DEFAULT_CAPS: verdict(DOCKER, machine, name, *a, mask=mask)  # noqa: E731
    for name in ("read", "write", "openat", "execve", "mkdirat", "futex", "rt_sigreturn", "wait4", "ptrace"):
        assert v(name) == ALLOW, name
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "bpf", "mount",
                 "umount2", "unshare", "setns", "kexec_load", "init_module", "reboot", "open_by_handle_at",
                 "perf_event_open", "userfaultfd", "kcmp", "pivot_root", "swapon"):  # fmt: skip
        assert v(name) == EPERM, name
    assert v("clone3") == ENOSYS
    assert v("clone", CLONE_THREAD_FLAGS) == ALLOW
    assert v("clone", CLONE_THREAD_FLAGS | CLONE_NEWUSER) == EPERM
    assert v("clone", CLONE_NEWNS) == EPERM
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert v("personality", persona) == ALLOW, hex(persona)
    for persona in (0x0040000, 0x0400000, 0x1_0000_0000, 0xFFFFFFFF_FFFFFFFF):
        assert v("personality", persona) == EPERM, hex(persona)
    assert v("socket", 2) == ALLOW and v("socket", 10) == ALLOW and v("socket", 1) == ALLOW
    assert v("socket", 40) == EPERM
    assert v("socket", 0x1_0000_0028) == EPERM  # the kernel truncates the family to an int
    assert v("socket", 0x1_0000_0002) == ALLOW
    # capabilities unlock their groups
    admin = cap("SYS_ADMIN")
    for name in ("mount", "unshare", "setns", "clone3", "bpf"):
        assert v(name, mask=admin) == ALLOW, name
    assert v("clone", CLONE_NEWUSER, mask=admin) == ALLOW
    assert v("io_uring_setup", mask=ALL_CAPS) == EPERM
    assert v("kcmp", mask=cap("SYS_PTRACE")) == ALLOW
    assert v("open_by_handle_at", mask=cap("DAC_READ_SEARCH")) == ALLOW
    assert v("clock_settime", mask=cap("SYS_TIME")) == ALLOW


def test_architecture_checks() -> None:
    prog = seccomp.compile_profile(DOCKER, DEFAULT_CAPS, "x86_64", KERNEL)
    x86_64, aarch64 = seccomp.ARCHES["x86_64"][0], seccomp.ARCHES["aarch64"][0]
    read = seccomp.syscall_table("x86_64")["read"]
    assert run_bpf(prog, read, x86_64) == ALLOW
    assert run_bpf(prog, read, 0x40000003) == EPERM  # i386 (int 0x80)
    assert run_bpf(prog, read, aarch64) == EPERM
    assert run_bpf(prog, read | seccomp.X32_BIT, x86_64) == EPERM  # the x32 ABI
    assert run_bpf(prog, 1000, x86_64) == ENOSYS  # newer than the profile: libc may fall back
    assert run_bpf(prog, -1, x86_64) == EPERM  # above the x32 bit


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("mask", [DEFAULT_CAPS, 0, ALL_CAPS, cap("SYS_ADMIN"), cap("SYS_PTRACE", "SYS_NICE")])
def test_every_syscall_agrees_with_the_profile(machine: str, mask: int) -> None:
    prog = seccomp.compile_profile(DOCKER, mask, machine, KERNEL)
    assert len(prog) <= seccomp.BPF_MAXINSNS
    arch = seccomp.ARCHES[machine][0]
    samples = [(), (0x7E020000,), (40,), (8,), (0xFFFFFFFF,), (1 << 40,)]
    expected = reference(DOCKER, machine, mask)
    for nr in range(max(seccomp.syscall_table(machine).values()) + 8):
        for args in samples:
            assert run_bpf(prog, nr, arch, args) == expected(nr, args), (nr, args)


def test_kernel_version_includes() -> None:
    old = seccomp.compile_profile(DOCKER, DEFAULT_CAPS, "x86_64", (4, 4))
    nr = seccomp.syscall_table("x86_64")["ptrace"]
    assert run_bpf(old, nr, seccomp.ARCHES["x86_64"][0]) == EPERM  # minKernel 4.8: ptrace escaped seccomp


OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT"]
EDGES = [0, 1, 0xFFFFFFFF, 0x1_0000_0000, 0x1_0000_0001, 0x7FFFFFFF_FFFFFFFF, 0xFFFFFFFF_FFFFFFFF, 40]


@pytest.mark.parametrize("op", [*OPS, "SCMP_CMP_MASKED_EQ"])
def test_64_bit_comparisons(op: str) -> None:
    rnd = random.Random(op)
    values = [*EDGES, *(rnd.getrandbits(64) for _ in range(6)), *(rnd.getrandbits(33) for _ in range(4))]
    for value in values:
        value_two = value & 0xFFFF0000_FFFF0000 if op == "SCMP_CMP_MASKED_EQ" else 0
        profile = {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {
                    "names": ["getpid"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 2, "value": value, "valueTwo": value_two, "op": op}],
                }
            ],
        }
        prog = seccomp.compile_profile(profile, DEFAULT_CAPS, "x86_64", KERNEL)
        nr = seccomp.syscall_table("x86_64")["getpid"]
        cond = seccomp.Cond(2, op, value, value_two)
        probes = [*values, value - 1 & (2**64 - 1), value + 1 & (2**64 - 1), value ^ (1 << 32), value ^ 1]
        for arg in probes:
            expected = ALLOW if holds(cond, arg) else EPERM
            assert run_bpf(prog, nr, seccomp.ARCHES["x86_64"][0], (0, 0, arg)) == expected, (op, value, arg)


def eq(index: int, value: int) -> dict:
    return {"index": index, "value": value, "op": "SCMP_CMP_EQ"}


def test_rule_semantics() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
            # two conditions on different arguments: AND
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "args": [eq(0, 1), eq(1, 2)]},
            # two conditions on the same argument: OR (runc splits them into separate rules)
            {"names": ["setpriority"], "action": "SCMP_ACT_ERRNO", "args": [eq(0, 1), eq(0, 2)]},
            # an unconditional rule wins over a conditional one
            {"names": ["dup"], "action": "SCMP_ACT_ERRNO", "args": [eq(0, 0)]},
            {"names": ["dup"], "action": "SCMP_ACT_TRAP"},
            {"names": ["no_such_syscall", "chown32"], "action": "SCMP_ACT_ERRNO"},  # skipped, as runc does
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_BOOT"]}},
        ],
    }  # fmt: skip
    v = lambda name, *a: verdict(profile, "x86_64", name, *a)  # noqa: E731
    assert v("mkdir") == v("mkdirat") == seccomp.RET_ERRNO | errno.EACCES
    assert v("read") == ALLOW and v("kill") == seccomp.RET_KILL_PROCESS
    assert v("getpriority", 1, 2) == EPERM and v("getpriority", 1, 3) == ALLOW
    assert v("setpriority", 1) == v("setpriority", 2) == EPERM and v("setpriority", 3) == ALLOW
    assert v("dup", 0) == v("dup", 1) == seccomp.RET_TRAP
    assert v("reboot") == ALLOW  # the include needs CAP_SYS_BOOT, which the default set lacks
    prog = seccomp.compile_profile(profile, DEFAULT_CAPS, "x86_64", KERNEL)
    assert run_bpf(prog, 1000, seccomp.ARCHES["x86_64"][0]) == ALLOW  # no ENOSYS stub under an ALLOW default


def test_large_profiles_use_long_jumps_and_stay_within_the_kernels_limit() -> None:
    # A conditional rule on every syscall: every leaf is a jump into a block, so the left halves of the
    # search tree outgrow a conditional jump's 255 and need JA.
    table = seccomp.syscall_table("x86_64")
    names = sorted(table)
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {
                "names": names,
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_GT"}],
            }
        ],
    }
    prog = seccomp.compile_profile(profile, DEFAULT_CAPS, "x86_64", KERNEL)
    assert any(insn[0] == seccomp.JA for insn in prog) and len(prog) <= seccomp.BPF_MAXINSNS
    arch = seccomp.ARCHES["x86_64"][0]
    for name in names:
        assert (
            run_bpf(prog, table[name], arch, (8,)) == ALLOW
            and run_bpf(prog, table[name], arch, (7,)) == EPERM
        )
    # Beyond BPF_MAXINSNS: refused with a reason, never a truncated filter.
    huge = copy.deepcopy(profile)
    huge["syscalls"][0]["args"] = [{"index": i, "value": 7, "op": "SCMP_CMP_GT"} for i in range(6)]
    with pytest.raises(ProfileError, match="BPF instructions"):
        seccomp.compile_profile(huge, DEFAULT_CAPS, "x86_64", KERNEL)


@pytest.mark.parametrize(
    "profile, message",
    [
        ([], "JSON object"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "notify"),
        ({"defaultAction": "ALLOW"}, "unsupported action"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "x"}]}, "names must be a list"),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}],
            },
            "errnoRet",
        ),  # fmt: skip
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["x"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "args value",
        ),  # fmt: skip
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["x"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}],
                    }
                ],
            },
            "unknown op",
        ),  # fmt: skip
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_FLY"]}}],
            },
            "unknown capability",
        ),  # fmt: skip
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "new"}}],
            },
            "minKernel",
        ),  # fmt: skip
    ],
)
def test_malformed_profiles_are_refused_with_a_reason(profile: object, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        seccomp.check(json.dumps(profile))


def test_filter_for_is_cached_and_unconfined_has_none() -> None:
    assert seccomp.filter_for("unconfined", DEFAULT_CAPS) is None
    first = seccomp.filter_for("default", DEFAULT_CAPS)
    assert first is seccomp.filter_for("default", DEFAULT_CAPS)
    assert first is not None and len(first) % 8 == 0


@pytest.mark.skipif(not shutil.which("cpp"), reason="needs the C preprocessor and linux-libc-dev")
def test_committed_syscall_table_matches_the_kernel_headers() -> None:
    tables = seccomp.syscall_table("x86_64"), seccomp.syscall_table("aarch64")
    assert tables[0]["io_uring_setup"] == tables[1]["io_uring_setup"] == 425
    assert (tables[0]["clone"], tables[1]["clone"], tables[1]["unshare"]) == (56, 220, 97)
    gen = REPO / "tests/support/gen_syscall_tables.py"
    r = subprocess.run([sys.executable, str(gen), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
