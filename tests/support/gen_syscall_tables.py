"""Generate the guest agent's syscall-number tables (runtime/seccomp_syscalls.json) from kernel headers.

    python3 tests/support/gen_syscall_tables.py            # rewrite the table
    python3 tests/support/gen_syscall_tables.py --check    # exit 1 if the committed table differs

The seccomp compiler needs each syscall's number on every architecture the guest runs on, and the guest must
not need headers or libseccomp for it, so the numbers are kept as data. They come from the C preprocessor run
over the Debian kernel headers on the build machine (`linux-libc-dev`, which carries both tables whatever
the build machine's own architecture is):

- x86_64: <asm/unistd_64.h>;
- aarch64: <asm-generic/unistd.h> with the `__ARCH_WANT_*` switches that arm64's own <asm/unistd.h> sets.

Syscalls added to the kernel after the headers were cut are listed below (`NEWER`). Since Linux 5.1 every new
syscall takes the same number on all architectures (424 and up), so one number serves both tables.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "guest-agent/pymachine_agent/runtime/seccomp_syscalls.json"

# arm64's arch/arm64/include/uapi/asm/unistd.h
ARM64_WANTS = ("RENAMEAT", "NEW_STAT", "SET_GET_RLIMIT", "TIME32_SYSCALLS", "SYS_CLONE3", "MEMFD_SECRET")

# name -> number, for syscalls newer than Debian 12's linux-libc-dev (6.1); the kernel's syscall tables.
NEWER = {
    "cachestat": 451,
    "fchmodat2": 452,
    "map_shadow_stack": 453,
    "futex_wake": 454,
    "futex_wait": 455,
    "futex_requeue": 456,
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
}
NEWER_X86_64 = {"uretprobe": 335}  # x86_64 only (arch/x86/entry/syscalls/syscall_64.tbl)


def _macros(include: str, defines: tuple[str, ...] = ()) -> dict[str, str]:
    src = f"#include <{include}>\n"
    args = ["cpp", "-dM", *[f"-D{d}" for d in defines], "-"]
    out = subprocess.run(args, input=src, capture_output=True, text=True, check=True).stdout
    macros: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"#define (\w+) (.+)$", line)
        if m:
            macros[m.group(1)] = m.group(2).strip()
    return macros


def _numbers(macros: dict[str, str]) -> dict[str, int]:
    """__NR_name -> number, following aliases such as `__NR_fcntl __NR3264_fcntl`."""

    def value(token: str, depth: int = 0) -> int | None:
        token = token.strip("() ")
        if re.fullmatch(r"\d+", token):
            return int(token)
        if depth < 8 and token in macros:
            return value(macros[token], depth + 1)
        return None

    table = {}
    for name, body in macros.items():
        if name.startswith("__NR_") and name != "__NR_syscalls":
            nr = value(body)
            if nr is not None:
                table[name[5:]] = nr
    return table


def generate() -> dict[str, dict[str, int]]:
    x86 = _numbers(_macros("asm/unistd_64.h"))
    arm = _numbers(_macros("asm-generic/unistd.h", tuple(f"__ARCH_WANT_{w}" for w in ARM64_WANTS)))
    arm.pop("arch_specific_syscall", None)  # a base number, not a syscall
    for table in (x86, arm):
        for name, nr in NEWER.items():
            table.setdefault(name, nr)
    for name, nr in NEWER_X86_64.items():
        x86.setdefault(name, nr)
    return {arch: dict(sorted(t.items())) for arch, t in (("x86_64", x86), ("aarch64", arm))}


def render(tables: dict[str, dict[str, int]]) -> str:
    return json.dumps(tables, indent=0, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(generate())
    if "--check" in argv:
        same = OUT.read_text() == text
        if not same:
            print(f"{OUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 0 if same else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
