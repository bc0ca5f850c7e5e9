#!/usr/bin/env python3
"""Start a daemon below a child subreaper that reaps its orphans at once: `subreaper.py libvirtd -d`.

libvirtd starts QEMU with a double fork, so a QEMU that exits becomes an orphan's zombie, which only its
reaper, normally PID 1, removes. libvirt counts the process alive until then (it polls `kill(pid, 0)` every
200 ms), and every save, shutdown and destroy waits for it. A PID 1 that reaps late (a container's or a
sandbox's init) adds that delay to each: on the CI host the zombie of a QEMU stayed 1.7 s, of a 2 s
`virsh destroy` (docs/machines.md, "Saved state"). Below this process (prctl PR_SET_CHILD_SUBREAPER) the
orphans are reaped the moment they exit. Where systemd runs libvirtd this is not used: systemd reaps at once.

The first process waits for the daemon's own start (`libvirtd -d` exits once it has forked into the
background) and exits with its status; the subreaper stays as long as anything below it lives.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def reap_until_none_left() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: subreaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    read_end, write_end = os.pipe()
    if os.fork():  # the caller's process: the daemon's start status, then gone
        os.close(write_end)
        status = os.read(read_end, 16)
        return int(status) if status.strip() else 1
    os.close(read_end)
    os.setsid()  # no terminal and no signals of the caller's session
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"subreaper: prctl: {os.strerror(ctypes.get_errno())}: orphans go to PID 1", file=sys.stderr)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        child = os.posix_spawnp(argv[0], argv, dict(os.environ))
        status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    except OSError:
        status = 127
    os.write(write_end, str(status).encode())
    os.close(write_end)
    reap_until_none_left()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
