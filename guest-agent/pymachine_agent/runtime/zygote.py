"""A warm, single-threaded process from which container supervisors are forked.

Starting a supervisor by exec'ing a fresh interpreter costs tens of milliseconds of interpreter start and
imports on every container start. Instead the agent spawns this zygote once (a fresh, thread-free process:
forking the threaded agent itself would be unsafe). The zygote keeps one forked "standby" child blocked on the
agent's SOCK_SEQPACKET socket; a request (JSON plus the supervisor's control socket, SCM_RIGHTS) wakes the
standby, which becomes that container's supervisor in its own session, and the zygote forks the next standby,
so no fork lies on the start path. Supervisors outlive the zygote and the agent (init adopts them). The
zygote exits when the agent's end of the socket closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from pymachine_agent.runtime import capabilities, seccomp, supervisor


def main(argv: list[str]) -> None:
    """Keep one forked "standby" process blocked on the agent's socket: a request wakes the standby, which
    becomes the supervisor at once (no fork on the start path); the zygote then forks the next standby."""
    sock = socket.socket(fileno=int(argv[0]))
    # Supervisors are reaped by the kernel (they outlive us anyway, then init adopts them).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Compile the default seccomp filter for the default capabilities once: every supervisor forked from
    # here finds it in seccomp.filter_for's cache.
    seccomp.filter_for("default", capabilities.resolve([], []))
    import gc

    gc.freeze()  # keep the preloaded modules' pages shared after fork
    while True:
        taken_r, taken_w = os.pipe()  # the standby says "T" (took a request) or "Q" (agent gone)
        if os.fork() == 0:
            os.close(taken_r)
            _standby(sock, taken_w)
        os.close(taken_w)
        while True:
            try:
                note = os.read(taken_r, 1)
                break
            except InterruptedError:
                continue
        os.close(taken_r)
        if note != b"T":  # the agent closed its end, or the standby died: the agent respawns us if needed
            os._exit(0)
        # Fork the next standby once this start is well under way (a fork now would compete for the CPU
        # with it), or at once if another request is already waiting.
        select.select([sock], [], [], 0.25)


def _standby(sock: socket.socket, taken_w: int) -> None:
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 65536, 1)
            break
        except InterruptedError:
            continue
    if not msg:
        os.write(taken_w, b"Q")
        os._exit(0)
    os.write(taken_w, b"T")
    os.close(taken_w)
    sock.close()
    req = json.loads(msg)
    os.setsid()
    log = os.open(os.path.join(req["dir"], "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    supervisor.run_supervisor(
        req["dir"], socket.socket(fileno=fds[0]), req["cg_root"], req["cg_parent"], req["handshake"]
    )


class Zygote:
    """Agent side: spawns the zygote on first use (and again if it died) and hands it supervisor requests."""

    def __init__(self, boot: list[str]) -> None:
        self._boot = boot
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [*self._boot, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self._sock = ours
        return ours

    def spawn(self, ctr_dir: str, ctl_fd: int, cg_root: str, cg_parent: str, handshake: bool) -> None:
        req = {"dir": ctr_dir, "cg_root": cg_root, "cg_parent": cg_parent, "handshake": handshake}
        raw = json.dumps(req).encode()
        with self._lock:
            for attempt in range(2):
                try:
                    socket.send_fds(self._ensure(), [raw], [ctl_fd])
                    return
                except OSError:
                    if attempt:
                        raise
                    self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(2)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGKILL)
                self._proc.wait()
            self._proc = None


if __name__ == "__main__":  # pragma: no cover - started through exec.boot_command
    main(sys.argv[1:])
