"""Run a program with setresuid/setresgid turned into successful no-ops: the uid squash QEMU 7.2's C virtiofsd
lacks (issue 13, ownership for non-root container users).

C virtiofsd serves each guest request with the guest caller's uid and gid: before a create, mkdir, mknod or
symlink it calls `syscall(SYS_setresgid, -1, gid, -1)` and `syscall(SYS_setresuid, -1, uid, -1)`, and puts
its own ids back afterwards. A share owned by a normal user is served from a user namespace whose only mapped
uid is root → the owner (so that what root in a container creates belongs to the owner), so for any other
guest uid those calls fail with EINVAL and the create fails: `docker run --user 1000` could not write to
the user's folder at all. The Rust virtiofsd has `--translate-uid squash-host:...`; the C one has no option
for it, so this wrapper installs a seccomp filter that answers both calls with 0 without running them, then
execs virtiofsd (seccomp filters are inherited and outlive exec; virtiofsd's own allow-list filter stacks on
top, and an ERRNO action wins over its ALLOW). Every request then runs as the namespace's root — the
owner on the host — whoever made it in the guest: a file any container uid creates belongs to the owner, as
in Docker Desktop.

What it cannot change: virtio_fs in the guest kernel mounts with `default_permissions`, so the guest kernel
checks the mode bits it is shown before a request leaves the VM, and the owner's files are shown as uid 0
(the namespace's root). A non-root container user can therefore create files only in folders whose mode lets
everybody write (e.g. 0777), and reads work by the "other" bits; see docs/machines.md "Ownership".

Nothing is widened on the host: the requests ran as the owner before for guest root, and the owner's
rights (in a user namespace where only the owner is mapped) are still the bound.

    python -m pymachine.hostvm.virtiofs_squash [--uid=N --gid=N] -- PROGRAM [ARGS...]

With --uid/--gid (pymachine runs as root) it first becomes that user, as `setpriv --reuid --regid
--clear-groups` did before: the filter must come after that drop, or the drop itself would be a no-op.
Installing a filter without privilege needs no_new_privs, which it sets; the program then execs `unshare
--user --map-root-user` and virtiofsd, neither of which gains privilege by exec.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

# seccomp(2) / <linux/filter.h> constants.
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000  # | errno; errno 0 = the call returns 0 without running
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
# Per architecture: the AUDIT_ARCH value in seccomp_data.arch, and the numbers of setresuid, setresgid.
ARCHES = {
    "x86_64": (0xC000003E, 117, 119),
    "aarch64": (0xC00000B7, 147, 149),
}


def filter_program(machine: str) -> bytes:
    """The classic-BPF program (pure; unit-tested): on `machine`, setresuid and setresgid return 0 unrun;
    everything else, and every call of another ABI, is allowed (virtiofsd's own filter decides those)."""
    if machine not in ARCHES:
        raise OSError(f"no uid squash for this architecture ({machine})")
    arch, setresuid, setresgid = ARCHES[machine]
    insns = [
        (BPF_LD_W_ABS, 0, 0, 4),  # A = seccomp_data.arch
        (BPF_JEQ_K, 0, 3, arch),  # another ABI: allow
        (BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        (BPF_JEQ_K, 2, 0, setresuid),
        (BPF_JEQ_K, 1, 0, setresgid),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | 0),
    ]
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


def install() -> None:
    """Install the filter on this process (inherited by what it execs), with no_new_privs set first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"no_new_privs for the uid squash: {os.strerror(err)}")
    prog = filter_program(platform.machine())
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter for the uid squash: {os.strerror(err)}")


def main(argv: list[str]) -> int:
    ids = {}
    while argv and argv[0].startswith(("--uid=", "--gid=")):
        key, _, value = argv.pop(0)[2:].partition("=")
        ids[key] = int(value)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or len(ids) == 1:
        print(
            "usage: python -m pymachine.hostvm.virtiofs_squash [--uid=N --gid=N] -- PROGRAM [ARGS...]",
            file=sys.stderr,
        )
        return 2
    if ids:
        os.setgroups([])
        os.setresgid(ids["gid"], ids["gid"], ids["gid"])
        os.setresuid(ids["uid"], ids["uid"], ids["uid"])
    install()
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
