"""The uid squash wrapper for C virtiofsd: its seccomp program, and a real process under it (set*id calls
become successful no-ops; everything else still runs)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from pymachine.hostvm import virtiofs_squash

WRAP = [sys.executable, "-m", "pymachine.hostvm.virtiofs_squash"]


def test_the_program_returns_zero_only_for_setresuid_and_setresgid() -> None:
    prog = virtiofs_squash.filter_program("x86_64")
    insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]

    def run(arch: int, nr: int) -> int:
        data, pc, acc = {0: nr, 4: arch}, 0, 0
        while True:
            code, jt, jf, k = insns[pc]
            if code == virtiofs_squash.BPF_LD_W_ABS:
                acc, pc = data[k], pc + 1
            elif code == virtiofs_squash.BPF_JEQ_K:
                pc = pc + 1 + (jt if acc == k else jf)
            else:
                return k

    x86 = 0xC000003E
    errno0 = virtiofs_squash.SECCOMP_RET_ERRNO
    assert run(x86, 117) == errno0 and run(x86, 119) == errno0  # setresuid, setresgid
    for nr in (105, 106, 113, 114, 122, 123, 0, 1, 257):  # setuid, setgid, setreuid, setregid, setfs*, ...
        assert run(x86, nr) == virtiofs_squash.SECCOMP_RET_ALLOW
    assert run(0x40000003, 117) == virtiofs_squash.SECCOMP_RET_ALLOW  # another ABI: not ours to judge
    with pytest.raises(OSError, match="architecture"):
        virtiofs_squash.filter_program("sparc")


def test_a_process_under_it_keeps_its_ids_and_works() -> None:
    probe = (
        "import os; os.setresgid(-1, 4321, -1); os.setresuid(-1, 4321, -1); "
        "print(os.getresuid(), os.getresgid())"
    )
    out = subprocess.run(
        [*WRAP, "--", sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    me, grp = os.getuid(), os.getgid()
    assert out.stdout.strip() == f"({me}, {me}, {me}) ({grp}, {grp}, {grp})"
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if os.geteuid() == 0:  # without the wrapper the call really changes the ids
        assert bare.stdout.strip().startswith(f"({me}, 4321, {me})")
    else:
        assert "PermissionError" in bare.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_as_root_it_becomes_the_owner_before_the_filter() -> None:
    out = subprocess.run(
        [*WRAP, "--uid=1000", "--gid=1000", "--", "/bin/sh", "-c", "id -u; id -g; id -G"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["1000", "1000", "1000"]


def test_a_lone_uid_is_refused() -> None:
    out = subprocess.run([*WRAP, "--uid=1000", "--", "true"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
