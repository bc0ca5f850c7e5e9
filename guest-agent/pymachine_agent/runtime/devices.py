"""The container's device allowlist: a cgroup v2 BPF_PROG_TYPE_CGROUP_DEVICE program, as runc and crun attach.

The kernel runs the program on every mknod and every open of a block or character device by a process in the
container's cgroup (exec'd processes join the same cgroup); a 0 answer makes the call fail with EPERM. The
rules are Docker's defaults (moby's oci/defaults.go plus the devices runc always appends): mknod of any node,
read/write of null, zero, full, random, urandom, tty, console, ptmx, the pts and tun/tap, nothing else.
`--device` and `--device-cgroup-rule` add allow rules; `--privileged` gets no program at all (every device).

This is the second wall. The first is `nodev` on every filesystem a container can write to (mounts.py), which
also holds on a kernel without cgroup v2 or BPF, where `install` logs a warning and returns.

The program is assembled here from eBPF instructions (8 bytes each) and loaded with bpf(2) through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat
import struct
from dataclasses import dataclass

from pymachine_agent.runtime import libc
from pymachine_agent.runtime.spec import ContainerSpec, DeviceMapping

log = logging.getLogger("pymachine_agent.runtime.devices")

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # attach type
BPF_F_ALLOW_MULTI = 2  # runc's flag: programs of parent cgroups still run, and none can be overridden below
# struct bpf_cgroup_dev_ctx { u32 access_type /* (access << 16) | type */; u32 major; u32 minor; }
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
# A licence string is required; only GPL-only helpers need a GPL one, and this program calls no helper.
LICENSE = b"Apache-2.0"

WILDCARD = -1
_RULE_RE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")  # dockerd's deviceCgroupRuleRegex


@dataclass(frozen=True)
class Rule:
    """An allow rule: type "c", "b" or "a" (both), major/minor or WILDCARD, access a subset of "rwm"."""

    type: str
    major: int
    minor: int
    access: str


def parse_rule(text: str) -> Rule:
    """ "c 1:3 rwm" (--device-cgroup-rule) → Rule; ValueError with dockerd's message otherwise."""
    m = _RULE_RE.match(text)
    if not m:
        raise ValueError(f"invalid device cgroup format '{text}'")
    num = [WILDCARD if g == "*" else int(g) for g in (m.group(2), m.group(3))]
    if any(n > 0xFFFFFFFF for n in num):
        raise ValueError(f"invalid device cgroup format '{text}'")
    return Rule(m.group(1), num[0], num[1], m.group(4))


# Docker's effective default: moby's spec (deny all; allow 1:5, 1:3, 1:9, 1:8, 5:0, 5:1) followed by runc's
# AllowedDevices (mknod of everything; null, random, full, tty, zero, urandom, the pts, ptmx, tun/tap).
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("c", WILDCARD, WILDCARD, "m"),
    Rule("b", WILDCARD, WILDCARD, "m"),
    Rule("c", 1, 3, "rwm"),  # null
    Rule("c", 1, 5, "rwm"),  # zero
    Rule("c", 1, 7, "rwm"),  # full
    Rule("c", 1, 8, "rwm"),  # random
    Rule("c", 1, 9, "rwm"),  # urandom
    Rule("c", 5, 0, "rwm"),  # tty
    Rule("c", 5, 1, "rwm"),  # console
    Rule("c", 5, 2, "rwm"),  # ptmx
    Rule("c", 136, WILDCARD, "rwm"),  # /dev/pts/*
    Rule("c", 10, 200, "rwm"),  # /dev/net/tun (runc keeps it for compatibility)
)


@dataclass(frozen=True)
class HostDevice:
    """A guest device node resolved for --device: where it goes in the container, and what it is."""

    path: str  # inside the container
    type: str  # "c" | "b"
    major: int
    minor: int
    mode: int  # permission bits of the guest node, as Docker copies them
    uid: int
    gid: int
    permissions: str  # the cgroup access ("rwm" by default)

    def rule(self) -> Rule:
        return Rule(self.type, self.major, self.minor, self.permissions)


# The nodes every container's /dev gets (runc's AllowedDevices with a path): root's, mode 0666.
DEFAULT_NODES: tuple[HostDevice, ...] = tuple(
    HostDevice(f"/dev/{name}", "c", major, minor, 0o666, 0, 0, "rwm")
    for name, major, minor in (
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    )
)  # fmt: skip


def node_at(path: str, inside: str, permissions: str = "rwm") -> HostDevice | None:
    """The device node at guest `path` (a final symlink is not followed) to be created at `inside`."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return None
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return HostDevice(inside, kind, major, minor, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, permissions)


def nodes_below(
    folder: str, inside: str, permissions: str = "rwm", skip: tuple[str, ...] = ()
) -> list[HostDevice]:
    """Every device node under guest `folder`, mapped under `inside`; `skip` names entries of `folder`."""
    out: list[HostDevice] = []
    for here, dirs, files in os.walk(folder):
        if here == folder:
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(here, name)
            node = node_at(full, inside + full[len(folder) :], permissions)
            if node:
                out.append(node)
    return out


def resolve(path_on_host: str, path_in_container: str, permissions: str) -> list[HostDevice]:
    """dockerd's DevicesFromPath: one guest node (a symlink such as /dev/disk/by-id/x is followed), or every
    node below a guest folder, mapped under `path_in_container`. OSError when nothing is found."""
    real = os.path.realpath(path_on_host) if os.path.islink(path_on_host) else path_on_host
    target = path_in_container or path_on_host
    node = node_at(real, target, permissions)
    out = [node] if node else nodes_below(real, target, permissions) if os.path.isdir(real) else []
    if not out:
        why = "not a device node" if os.path.exists(real) else "no such file or directory"
        raise OSError(
            f'error gathering device information while adding custom device "{path_on_host}": {why}'
        )
    return out


def guest_devices() -> list[HostDevice]:
    """--privileged: every device node of the guest's /dev, as dockerd's HostDevices lists them (not the pts,
    shm, mqueue or fd folders, not console; ptmx is the container's own devpts one)."""
    return nodes_below(
        "/dev", "/dev", skip=("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console", "ptmx")
    )


def resolve_all(mappings: list[DeviceMapping]) -> list[HostDevice]:
    out: list[HostDevice] = []
    for m in mappings:
        out += resolve(m.path_on_host, m.path_in_container, m.cgroup_permissions or "rwm")
    return out


def rules_for(spec: ContainerSpec, resolved: list[HostDevice]) -> list[Rule]:
    """Docker's order: the defaults, then --device, then --device-cgroup-rule (all allow rules)."""
    return [*DEFAULT_RULES, *(d.rule() for d in resolved), *(parse_rule(r) for r in spec.device_cgroup_rules)]


# -- the eBPF program ------------------------------------------------------------------------------------
R0, R1, R2, R3, R4, R5 = range(6)
LDXW = 0x61  # BPF_LDX | BPF_MEM | BPF_W
AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
MOV32_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
EXIT = 0x95  # BPF_JMP | BPF_EXIT
NEXT = "next"  # placeholder jump target: the first instruction after the current rule's block


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def merge(rules: list[Rule] | tuple[Rule, ...]) -> list[Rule]:
    """Rules for the same device are one rule with the union of their access (as cgroup v1 merges them),
    so that "c 1:3 r" plus "c 1:3 w" allows an O_RDWR open. An allow rule of type "a" allows everything,
    whatever its numbers (cgroup v1 and runc read it so)."""
    if any(r.type == "a" for r in rules):
        return [Rule("a", WILDCARD, WILDCARD, "rwm")]
    access: dict[tuple[str, int, int], set[str]] = {}
    for r in rules:
        access.setdefault((r.type, r.major, r.minor), set()).update(r.access)
    return [Rule(t, ma, mi, "".join(c for c in "rwm" if c in acc)) for (t, ma, mi), acc in access.items()]


def program(rules: list[Rule] | tuple[Rule, ...]) -> bytes:
    """The eBPF program that returns 1 (allow) when the access matches one of `rules`, else 0 (EPERM).

    Registers: r2 = device type, r3 = requested access, r4 = major, r5 = minor. Each rule is a block of
    "if this field differs, jump to the next block" checks ending in "return 1"; the last block returns 0."""
    head = [
        _insn(LDXW, R2, R1, 0),
        _insn(AND32_K, R2, imm=0xFFFF),
        _insn(LDXW, R3, R1, 0),
        _insn(RSH32_K, R3, imm=16),
        _insn(LDXW, R4, R1, 4),
        _insn(LDXW, R5, R1, 8),
    ]
    blocks: list[bytes] = []
    for rule in merge(rules):
        block: list[tuple[int, int, int, object, int]] = []
        if rule.type != "a":
            block.append((JNE_K, R2, 0, NEXT, DEV_CHAR if rule.type == "c" else DEV_BLOCK))
        wanted = sum(ACCESS[c] for c in set(rule.access))
        if wanted != ACC_MKNOD | ACC_READ | ACC_WRITE:  # every bit asked for must be in the rule's access
            block += [(MOV32_X, R1, R3, 0, 0), (AND32_K, R1, 0, 0, wanted), (JNE_X, R1, R3, NEXT, 0)]
        if rule.major != WILDCARD:
            block.append((JNE_K, R4, 0, NEXT, rule.major))
        if rule.minor != WILDCARD:
            block.append((JNE_K, R5, 0, NEXT, rule.minor))
        block += [(MOV32_K, R0, 0, 0, 1), (EXIT, 0, 0, 0, 0)]
        for i, (code, dst, src, off, imm) in enumerate(block):
            jump = len(block) - i - 1 if off == NEXT else off
            blocks.append(_insn(code, dst, src, jump, imm))  # type: ignore[arg-type]
    tail = [_insn(MOV32_K, R0, imm=0), _insn(EXIT)]
    return b"".join(head + blocks + tail)


# -- bpf(2) ----------------------------------------------------------------------------------------------
class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _ProgAttach(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
    ]


_bpf = libc._libc.syscall


def _call(cmd: int, attr: ctypes.Structure) -> int:
    n = ctypes.c_long
    ret = _bpf(n(_SYS_BPF), n(cmd), ctypes.byref(attr), n(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class VerifierError(OSError):
    """The kernel knows the program type but refused this program (a bug here, never a missing feature)."""


def load(insns: bytes) -> int:
    """BPF_PROG_LOAD → the program's fd. A verifier rejection raises VerifierError with the verifier's log;
    EINVAL with an empty log is a kernel without cgroup device programs (CONFIG_CGROUP_BPF=n)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(LICENSE)
    attr = _ProgLoad(
        prog_type=BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(lic),
        prog_name=b"pm_devices",
    )
    try:
        return _call(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno != errno.EACCES and e.errno != errno.EINVAL:
            raise
        buf = ctypes.create_string_buffer(65536)  # load again, asking the verifier why
        attr.log_level, attr.log_size, attr.log_buf = 1, len(buf), ctypes.addressof(buf)
        try:
            return _call(BPF_PROG_LOAD, attr)
        except OSError as e2:
            if not buf.value:
                raise
            raise VerifierError(e2.errno, f"BPF_PROG_LOAD: {buf.value.decode(errors='replace')}") from e


def attach(cgroup_dir: str, prog_fd: int) -> None:
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = _ProgAttach(
            target_fd=fd, attach_bpf_fd=prog_fd, attach_type=BPF_CGROUP_DEVICE, attach_flags=BPF_F_ALLOW_MULTI
        )
        _call(BPF_PROG_ATTACH, attr)
    finally:
        os.close(fd)


_warned = False


def install(cgroup_dir: str | None, rules: list[Rule]) -> bool:
    """Attach the allowlist `rules` to `cgroup_dir` (a cgroup v2 folder; None when there is none). The
    attached program stays until the cgroup is removed. Returns False, with one warning per process, when
    the kernel cannot do it: then only nodev keeps the container from the guest's devices."""
    global _warned
    why = ""
    if cgroup_dir is None:
        why = "no cgroup v2 hierarchy"
    else:
        try:
            fd = load(program(rules))
        except OSError as e:
            if isinstance(e, VerifierError) or e.errno not in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
                raise
            why = f"bpf(BPF_PROG_LOAD): {e.strerror}"
        else:
            try:
                attach(cgroup_dir, fd)
                return True
            finally:
                os.close(fd)
    if not _warned:
        _warned = True
        log.warning("no device cgroup program (%s): containers rely on nodev mounts alone", why)
    return False
