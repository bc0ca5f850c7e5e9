"""Seccomp: Docker's default profile (or one the user sends), compiled to classic BPF here and loaded with
prctl(PR_SET_SECCOMP) right before execve.

The profile is data in Docker's JSON format: `seccomp_default.json` is moby's profiles/seccomp/default.json
(an allowlist with EPERM as the default action; syscall groups unlocked by capabilities through
`includes`/`excludes`; argument conditions on clone, personality and socket), with io_uring_* left out as
in Docker >= 25. `docker run --security-opt seccomp=PROFILE.json` hands us the file's JSON, compiled alike.
Syscall numbers come from `seccomp_syscalls.json`, generated from the kernel headers by
tests/support/gen_syscall_tables.py.

Why a compiler of our own rather than libseccomp (Debian's python3-seccomp):
- the guest agent is stdlib-only: it runs on the guest's bare Python and is provisioned onto machines we do
  not build (the ssh driver), where python3-seccomp may be missing or of another libseccomp version;
- the filter is loaded in the container's init after pivot_root, where the guest's libraries are out of reach,
  so it must be a ready byte string by then (compiled in the agent's own filesystem view, cached);
- the output is a plain instruction list, so the unit tests run it through a BPF interpreter and check
  verdicts without a kernel; libseccomp's output could only be checked by running syscalls.
What libseccomp would add and we don't need: other architectures (we serve x86_64 and aarch64) and its
optimiser (our layout is a binary search over syscall-number ranges, ~10 comparisons per syscall).

Semantics, as runc applies a profile through libseccomp: a rule applies when all of `includes` hold
(`caps` all in the container's bounding set, `arches` naming ours, `minKernel` <= the running kernel) and
none of `excludes`; a rule's `args` must all hold (AND), except that several conditions on the same argument
become separate rules (OR), as runc splits them. Per syscall, an unconditional rule wins; otherwise the first
conditional rule that holds; otherwise the default action. Syscalls above the highest number we know get
ENOSYS (runc's stub, so that libc falls back from syscalls newer than the profile), x32 and foreign
architectures get EPERM (stricter than Docker, which also admits x86 and x32 code). Names the architecture
lacks are skipped, as runc does.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from pymachine_agent.runtime import libc
from pymachine_agent.runtime.capabilities import CAP_NAMES

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096
X32_BIT = 0x40000000
_HERE = os.path.dirname(os.path.abspath(__file__))

RET_KILL_PROCESS, RET_KILL_THREAD, RET_TRAP = 0x80000000, 0x00000000, 0x00030000
RET_ERRNO, RET_TRACE, RET_LOG, RET_ALLOW = 0x00050000, 0x7FF00000, 0x7FFC0000, 0x7FFF0000
_ACTIONS = {  # profile action -> (return value, takes errnoRet)
    "SCMP_ACT_KILL": (RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_THREAD": (RET_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (RET_KILL_PROCESS, False),
    "SCMP_ACT_TRAP": (RET_TRAP, False),
    "SCMP_ACT_ERRNO": (RET_ERRNO, True),
    "SCMP_ACT_TRACE": (RET_TRACE, True),
    "SCMP_ACT_LOG": (RET_LOG, False),
    "SCMP_ACT_ALLOW": (RET_ALLOW, False),
}
_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT")
_MASKED = "SCMP_CMP_MASKED_EQ"
# machine -> (AUDIT_ARCH_*, Go's name of it as profiles' `arches` use it)
ARCHES = {"x86_64": (0xC000003E, "amd64"), "aarch64": (0xC00000B7, "arm64")}

# classic BPF opcodes
LD_ABS, AND_K, JA, JEQ, JGT, JGE, RET = 0x20, 0x54, 0x05, 0x15, 0x25, 0x35, 0x06
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16  # struct seccomp_data; args are u64, little-endian on both arches


class ProfileError(ValueError):
    """The profile is not one we can apply; the message says what is wrong with it."""


@dataclass(frozen=True)
class Cond:
    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class Rule:
    ret: int  # the seccomp return value
    conds: tuple[Cond, ...] = ()


# -- the profile ------------------------------------------------------------------------------------


def _int(v: Any, what: str, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise ProfileError(f"{what} must be an integer from 0 to {hi}, not {v!r}")
    return v


def _strings(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ProfileError(f"{what} must be a list of strings")
    return v


def _ret(action: Any, errno_ret: Any, default_errno: int, where: str) -> int:
    if action not in _ACTIONS:
        raise ProfileError(f"{where}: unsupported action {action!r} (one of {', '.join(_ACTIONS)})")
    base, takes_errno = _ACTIONS[action]
    if not takes_errno:
        return base
    return base | (default_errno if errno_ret is None else _int(errno_ret, f"{where}: errnoRet", 4095))


def _kernel_version(text: str, where: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in text.split("-")[0].split(".")[:2])
    except ValueError:
        raise ProfileError(f"{where}: minKernel {text!r} is not a kernel version such as 4.8") from None
    return major, minor


def _running_kernel() -> tuple[int, int]:
    try:
        return _kernel_version(os.uname().release, "uname")
    except ProfileError:
        return (0, 0)


def _conds(args: Any, where: str) -> list[tuple[Cond, ...]]:
    """A rule's `args` as alternatives (OR) of condition sets (AND): one set, or one per condition when an
    argument index repeats (runc's split)."""
    if args is None:
        return [()]
    if not isinstance(args, list):
        raise ProfileError(f"{where}: args must be a list")
    conds = []
    for a in args:
        if not isinstance(a, dict):
            raise ProfileError(f"{where}: each of args must be an object")
        op = a.get("op")
        if op not in (*_OPS, _MASKED):
            raise ProfileError(f"{where}: unknown op {op!r}")
        conds.append(
            Cond(
                _int(a.get("index"), f"{where}: args index", 5),
                op,
                _int(a.get("value", 0), f"{where}: args value", 2**64 - 1),
                _int(a.get("valueTwo", 0), f"{where}: args valueTwo", 2**64 - 1),
            )
        )
    indexes = [c.index for c in conds]
    return [(c,) for c in conds] if len(set(indexes)) < len(indexes) else [tuple(conds)]


def _applies(entry: dict, caps: set[str], arch: str, kernel: tuple[int, int], where: str) -> bool:
    inc, exc = (entry.get(k) if entry.get(k) is not None else {} for k in ("includes", "excludes"))
    if not isinstance(inc, dict) or not isinstance(exc, dict):
        raise ProfileError(f"{where}: includes and excludes must be objects")
    for f in (inc, exc):
        for c in _strings(f.get("caps"), f"{where}: caps"):
            if c.upper().removeprefix("CAP_") not in CAP_NAMES:
                raise ProfileError(f"{where}: unknown capability {c!r}")
    if (arches := _strings(inc.get("arches"), f"{where}: includes.arches")) and arch not in arches:
        return False
    if not all(c.upper() in caps for c in _strings(inc.get("caps"), "")):
        return False
    if inc.get("minKernel") and kernel < _kernel_version(str(inc["minKernel"]), where):
        return False
    if arch in _strings(exc.get("arches"), f"{where}: excludes.arches"):
        return False
    if any(c.upper() in caps for c in _strings(exc.get("caps"), "")):
        return False
    return not (exc.get("minKernel") and kernel >= _kernel_version(str(exc["minKernel"]), where))


def resolve(
    profile: Any, caps: set[str], machine: str, kernel: tuple[int, int]
) -> tuple[int, dict[int, list[Rule]]]:
    """(default return value, {syscall number: its rules in profile order}) for a container with `caps`
    ("CAP_..." names) on `machine`. Raises ProfileError for anything malformed."""
    if not isinstance(profile, dict):
        raise ProfileError("the profile must be a JSON object")
    if profile.get("listenerPath") or profile.get("defaultAction") == "SCMP_ACT_NOTIFY":
        raise ProfileError("seccomp notify (listenerPath, SCMP_ACT_NOTIFY) is not supported")
    _strings(profile.get("architectures"), "architectures")
    default_errno = _int(profile.get("defaultErrnoRet", errno.EPERM), "defaultErrnoRet", 4095)
    default = _ret(profile.get("defaultAction"), None, default_errno, "defaultAction")
    syscalls = profile.get("syscalls")
    syscalls = [] if syscalls is None else syscalls
    if not isinstance(syscalls, list):
        raise ProfileError("syscalls must be a list")
    arch = ARCHES[machine][1]
    table = syscall_table(machine)
    rules: dict[int, list[Rule]] = {}
    for i, entry in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            raise ProfileError(f"{where} must be an object")
        names = _strings(entry.get("names"), f"{where}: names")
        if isinstance(entry.get("name"), str):  # the old one-name form
            names = [*names, entry["name"]]
        ret = _ret(entry.get("action"), entry.get("errnoRet"), errno.EPERM, where)
        alternatives = _conds(entry.get("args"), where)
        if not _applies(entry, caps, arch, kernel, where):
            continue
        for name in names:
            nr = table.get(name)
            if nr is not None:  # a name this architecture lacks (chown32 on x86_64) is skipped, as runc does
                rules.setdefault(nr, []).extend(Rule(ret, conds) for conds in alternatives)
    return default, rules


@functools.cache
def syscall_table(machine: str) -> dict[str, int]:
    with open(os.path.join(_HERE, "seccomp_syscalls.json")) as f:
        return json.load(f)[machine]


@functools.cache
def default_profile() -> dict:
    with open(os.path.join(_HERE, "seccomp_default.json")) as f:
        return json.load(f)


def parse(value: str) -> Any:
    """The profile a ContainerSpec's `seccomp` names: "default" or the JSON of a custom one."""
    if value == "default":
        return default_profile()
    try:
        return json.loads(value)
    except ValueError as e:
        raise ProfileError(f"the profile is not valid JSON: {e}") from None


# -- the compiler -----------------------------------------------------------------------------------

Insn = tuple[int, Any, Any, Any]  # (code, jt, jf, k); jt/jf (conditional jumps) or k (JA) may be a label


def _cond_code(c: Cond, fail: str, ok: str) -> list[Insn]:
    """Jump to `fail` unless the 64-bit argument satisfies `c`; fall through (or jump to `ok`, placed right
    after) when it does. The high word decides unless it is equal, then the low word."""
    hi_off, lo_off = OFF_ARGS + 8 * c.index + 4, OFF_ARGS + 8 * c.index
    vh, vl = c.value >> 32, c.value & 0xFFFFFFFF
    ld_hi, ld_lo = (LD_ABS, 0, 0, hi_off), (LD_ABS, 0, 0, lo_off)
    if c.op == _MASKED:
        th, tl = c.value_two >> 32, c.value_two & 0xFFFFFFFF
        return [ld_hi, (AND_K, 0, 0, vh), (JEQ, 0, fail, th), ld_lo, (AND_K, 0, 0, vl), (JEQ, 0, fail, tl)]
    if c.op == "SCMP_CMP_EQ":
        return [ld_hi, (JEQ, 0, fail, vh), ld_lo, (JEQ, 0, fail, vl)]
    if c.op == "SCMP_CMP_NE":
        return [ld_hi, (JEQ, 0, ok, vh), ld_lo, (JEQ, fail, 0, vl)]
    if c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        last = (JGT, 0, fail, vl) if c.op == "SCMP_CMP_GT" else (JGE, 0, fail, vl)
        return [ld_hi, (JGT, ok, 0, vh), (JEQ, 0, fail, vh), ld_lo, last]
    last = (JGE, fail, 0, vl) if c.op == "SCMP_CMP_LT" else (JGT, fail, 0, vl)  # LT, LE
    return [ld_hi, (JGT, fail, 0, vh), (JEQ, 0, ok, vh), ld_lo, last]


def _tree(ranges: list[tuple[int, Insn]]) -> list[Insn]:
    """Binary search over [(first syscall number, leaf instruction)], sorted: each node sends numbers at or
    above its split to the right half. Conditional jumps reach 255 instructions, so a larger left half is
    stepped over with JA."""
    if len(ranges) == 1:
        return [ranges[0][1]]
    mid = len(ranges) // 2
    left, right = _tree(ranges[:mid]), _tree(ranges[mid:])
    split = ranges[mid][0]
    if len(left) <= 255:
        return [(JGE, len(left), 0, split), *left, *right]
    return [(JGE, 0, 1, split), (JA, 0, 0, len(left)), *left, *right]


def _assemble(code: list[Insn | str]) -> list[tuple[int, int, int, int]]:
    """Resolve labels (strings in the list mark positions) into relative jump offsets."""
    labels: dict[str, int] = {}
    insns: list[Insn] = []
    for item in code:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = []
    for pc, (op, jt, jf, k) in enumerate(insns):
        jt, jf, k = (labels[v] - pc - 1 if isinstance(v, str) else v for v in (jt, jf, k))
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ProfileError("the profile's argument conditions on one syscall are too long to compile")
        out.append((op, jt, jf, k))
    if len(out) > BPF_MAXINSNS:
        raise ProfileError(
            f"the profile compiles to {len(out)} BPF instructions, over the kernel's {BPF_MAXINSNS}"
        )
    return out


def compile_profile(
    profile: Any, cap_mask: int, machine: str, kernel: tuple[int, int] | None = None
) -> list[tuple[int, int, int, int]]:
    """The classic BPF program, as (code, jt, jf, k) instructions, for a container with `cap_mask`."""
    if machine not in ARCHES:
        raise ProfileError(f"no seccomp support for the {machine} architecture")
    caps = {f"CAP_{n}" for i, n in enumerate(CAP_NAMES) if cap_mask >> i & 1}
    default, rules = resolve(profile, caps, machine, kernel or _running_kernel())
    deny = RET_ERRNO | errno.EPERM
    code: list[Insn | str] = [(LD_ABS, 0, 0, OFF_ARCH), (JEQ, 1, 0, ARCHES[machine][0]), (RET, 0, 0, deny)]
    code.append((LD_ABS, 0, 0, OFF_NR))
    if machine == "x86_64":
        code += [(JGE, 0, 1, X32_BIT), (RET, 0, 0, deny)]
    top = max(syscall_table(machine).values())
    if default != RET_ALLOW:
        code += [(JGT, 0, 1, top), (RET, 0, 0, RET_ERRNO | errno.ENOSYS)]
    blocks: list[Insn | str] = []
    leaves: list[tuple[int, Insn]] = []
    for nr in range(top + 1):
        these = rules.get(nr, [])
        plain = [r for r in these if not r.conds]
        if plain or not these:
            leaf: Insn = (RET, 0, 0, plain[0].ret if plain else default)
        else:
            leaf = (JA, 0, 0, f"nr{nr}")
            blocks.append(f"nr{nr}")
            for i, rule in enumerate(these):
                for j, cond in enumerate(rule.conds):
                    blocks += [*_cond_code(cond, f"nr{nr}.{i}", f"nr{nr}.{i}.{j}"), f"nr{nr}.{i}.{j}"]
                blocks += [(RET, 0, 0, rule.ret), f"nr{nr}.{i}"]
            blocks.append((RET, 0, 0, default))
        if not leaves or leaves[-1][1] != leaf or leaf[0] == JA:
            leaves.append((nr, leaf))
    if default == RET_ALLOW:  # no ENOSYS stub above: numbers past the table take the default
        leaves.append((top + 1, (RET, 0, 0, default)))
    return _assemble([*code, *_tree(leaves), *blocks])


def encode(program: list[tuple[int, int, int, int]]) -> bytes:
    return b"".join(struct.pack("<HBBI", *insn) for insn in program)


def check(value: str) -> None:
    """Raise ProfileError unless the ContainerSpec `seccomp` value compiles, with the default capabilities
    and with all of them (the programs are largest then)."""
    if value in ("default", "unconfined"):
        return
    profile = parse(value)
    machine = os.uname().machine if os.uname().machine in ARCHES else "x86_64"
    from pymachine_agent.runtime import capabilities

    for mask in (capabilities.resolve([], []), (1 << len(CAP_NAMES)) - 1):
        compile_profile(profile, mask, machine)


@functools.lru_cache(maxsize=32)
def filter_for(value: str, cap_mask: int) -> bytes | None:
    """The encoded filter for a ContainerSpec's `seccomp` ("default", "unconfined" or JSON) and the
    container's capability mask; None for "unconfined". Cached: the zygote warms the default one."""
    if value == "unconfined":
        return None
    return encode(compile_profile(parse(value), cap_mask, os.uname().machine))


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(raw: bytes) -> None:
    """Load an encoded filter into this thread (inherited across fork and execve). Needs no_new_privs."""
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _Prog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
