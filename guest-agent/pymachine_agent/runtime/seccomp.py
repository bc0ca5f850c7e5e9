"""A small seccomp filter for containers: the part of Docker's default profile that matters once the
capability set is already reduced.

Docker's profile is a long allowlist; most of what it forbids already needs a capability the container does
not have (mount, reboot, module loading, clock setting, raw I/O...). What stays reachable without any
capability, and is the usual way into kernel bugs from a container, is denied here with EPERM:

- creating a user namespace (unshare/clone with CLONE_NEWUSER), which hands out a full capability set;
- the kernel keyring (keyctl, add_key, request_key), which is not namespaced;
- bpf, perf_event_open and userfaultfd;
- clone3, answered with ENOSYS (as Docker does) so that libc falls back to clone, whose flags a classic
  BPF filter can inspect;
- any other architecture or the x32 ABI (a way around the syscall numbers checked here).

Installed last, after no_new_privs, just before execve; `privileged` and seccomp="unconfined" skip it.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from pymachine_agent.runtime import libc

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
CLONE_NEWUSER = 0x10000000
X32_BIT = 0x40000000

_ARCH = {
    "x86_64": (0xC000003E, {"keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
                            "perf_event_open": 298, "userfaultfd": 323, "clone": 56, "clone3": 435,
                            "unshare": 272}),
    "aarch64": (0xC00000B7, {"keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
                             "perf_event_open": 241, "userfaultfd": 282, "clone": 220, "clone3": 435,
                             "unshare": 97}),
}  # fmt: skip
DENIED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd")

# classic BPF opcodes
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET = 0x06  # BPF_RET | BPF_K
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data (arg0's low word on little-endian)


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions. Jumps are relative, so the program is laid out as
    checks that each fall through to the next and jump forward to one of the return blocks at the end."""
    arch, nr = _ARCH[machine or platform.machine()]
    deny, enosys, allow = "deny", "enosys", "allow"
    body: list[tuple[int, object, object, int]] = [
        (LD_ABS, 0, 0, OFF_ARCH),
        (JEQ, 1, 0, arch),
        (RET, 0, 0, RET_ERRNO | errno.EPERM),
        (LD_ABS, 0, 0, OFF_NR),
        (JGE, deny, 0, X32_BIT),
        *[(JEQ, deny, 0, nr[name]) for name in DENIED],
        (JEQ, enosys, 0, nr["clone3"]),
        (JEQ, "flags", 0, nr["clone"]),
        (JEQ, "flags", 0, nr["unshare"]),
        (RET, 0, 0, RET_ALLOW),
    ]
    labels = {"flags": len(body)}
    body += [(LD_ABS, 0, 0, OFF_ARG0), (JSET, deny, 0, CLONE_NEWUSER), (RET, 0, 0, RET_ALLOW)]
    labels[deny] = len(body)
    body.append((RET, 0, 0, RET_ERRNO | errno.EPERM))
    labels[enosys] = len(body)
    body.append((RET, 0, 0, RET_ERRNO | errno.ENOSYS))
    labels[allow] = len(body)
    out = []
    for i, (code, jt, jf, k) in enumerate(body):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out.append((code, int(jt), int(jf), k))  # type: ignore[arg-type]
    return out


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into this thread (inherited across fork and execve). Needs no_new_privs first."""
    insns = program()
    raw = b"".join(struct.pack("HBBI", *insn) for insn in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _Prog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
    libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
