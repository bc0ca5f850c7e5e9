"""The container's init: what the supervisor's child does between fork and execve.

Order (runc's): own session + stdio, join the cgroup, create/join namespaces, build the rootfs and
pivot_root, hostname, tell the supervisor "namespaces ready" and wait for "go" (the network hook runs in
between; skipped when there is nothing to run), then resolve user/workdir/executable inside the
container, drop capabilities, switch user, load the seccomp filter, exec.
Errors go back to the supervisor over the sync socket as b"E<exit code> <message>".
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import termios

from pymachine_agent.runtime import capabilities, libc, mounts, namespaces, seccomp, user
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.spec import DEFAULT_PATH, ContainerSpec


class ExecFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def build_env(base: list[str], extra: list[str], home: str, hostname: str, tty: bool) -> list[str]:
    """Docker's environment: HOSTNAME, PATH default, TERM for a tty, HOME from passwd unless set."""
    env: dict[str, str] = {}
    for item in ["HOSTNAME=" + hostname] if hostname else []:
        k, _, v = item.partition("=")
        env[k] = v
    for item in [*base, *extra]:
        k, eq, v = item.partition("=")
        if eq:
            env[k] = v
        else:  # a bare `KEY` unsets it, as in dockerd's ReplaceOrAppendEnvValues
            env.pop(k, None)
    env.setdefault("PATH", DEFAULT_PATH)
    if tty:
        env.setdefault("TERM", "xterm")
    env.setdefault("HOME", home or "/")
    return [f"{k}={v}" for k, v in env.items()]


def find_executable(name: str, env: list[str]) -> str:
    """The path execve should run, searching the container's PATH. ExecFailed carries Docker's exit codes:
    127 not found, 126 found but not runnable."""
    if "/" in name:
        candidates = [name]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if "/" in name:
        if os.path.isdir(name):
            raise ExecFailed(f'exec: "{name}": is a directory', 126)
        if os.path.exists(name):
            raise ExecFailed(f'exec: "{name}": permission denied', 126)
        raise ExecFailed(f'exec: "{name}": stat {name}: no such file or directory', 127)
    raise ExecFailed(f'exec: "{name}": executable file not found in $PATH', 127)


def switch_user(u: user.ExecUser, cap_mask: int, no_new_privs: bool = True) -> None:
    capabilities.drop_bounding(cap_mask)
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    os.setgroups(u.groups)
    os.setresgid(u.gid, u.gid, u.gid)
    os.setresuid(u.uid, u.uid, u.uid)
    libc.prctl(libc.PR_SET_KEEPCAPS, 0)
    capabilities.apply(cap_mask, u.uid, no_new_privs)


def prepare_workdir(workdir: str, u: user.ExecUser) -> str:
    workdir = workdir or "/"
    if not os.path.isdir(workdir):
        os.makedirs(workdir, 0o755, exist_ok=True)  # Docker creates a missing WORKDIR
        if u.uid:
            os.chown(workdir, u.uid, u.gid)
    return workdir


def setup_stdio(stdin: int, stdout: int, stderr: int) -> None:
    os.setsid()
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        if fd != target:
            os.dup2(fd, target)


def set_winsize(fd: int, size: list[int]) -> None:
    """[height, width] (Docker's ConsoleSize) on a terminal, before the process starts, as dockerd does: a
    program that reads its size at once (`stty size`) must not see 0 0 and wait for the client's resize."""
    if len(size) == 2 and size[0] > 0 and size[1] > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def open_console(sync: socket.socket, size: list[int] | None = None) -> None:
    """-t: open the terminal inside the container (its /dev/ptmx is the container's devpts instance, so the
    process sees /dev/pts/0, as with runc's console socket), hand the master to the supervisor, make the
    slave our controlling terminal, stdio and /dev/console."""
    master, slave = os.openpty()
    set_winsize(slave, size or [])
    socket.send_fds(sync, [b"P"], [master])
    os.close(master)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    libc.mount(os.ttyname(slave), "/dev/console", None, libc.MS_BIND)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)


def run_init(
    spec: ContainerSpec,
    ctr_dir: str,
    sync: socket.socket,
    stdio: tuple[int, int, int],
    cgroup: Cgroup,
    send_console: bool,
    handshake: bool = True,
) -> None:
    """Never returns: execs the user's process or exits with a failure reported over `sync`."""
    try:
        # The supervisor ignores some signals and Python ignores SIGPIPE/SIGXFSZ: SIG_IGN survives execve.
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        setup_stdio(*stdio)
        s = sync.fileno()
        os.closerange(3, s)
        os.closerange(s + 1, 65536)
        mask = capabilities.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
        # Compiled (or taken from the zygote's cache) before pivot_root hides the agent's files; none for
        # --privileged, as Docker.
        bpf = None if spec.privileged else seccomp.filter_for(spec.seccomp, mask)
        cgroup.join(0)
        cgroup_v2 = cgroup.enabled
        for path, nstype in namespaces.join_paths(spec):
            namespaces.join(path, nstype)
        libc.unshare(namespaces.unshare_flags(spec, cgroup_v2))
        mounts.setup_rootfs(spec, ctr_dir, cgroup_v2)
        if send_console:
            open_console(sync, spec.console_size)
        if spec.uts == "private":
            libc.sethostname(spec.hostname or spec.id[:12])
            if spec.domainname:
                libc.setdomainname(spec.domainname)
        if spec.oom_score_adj:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(spec.oom_score_adj))
        if handshake:  # "namespaces ready", then wait for "go" while the agent runs its network hook
            sync.sendall(b"R")
            if sync.recv(1) != b"G":
                os._exit(1)
        try:
            u = user.resolve(spec.user, "/", spec.group_add)
        except LookupError as e:
            raise ExecFailed(str(e), 126) from e
        env = build_env(spec.env, [], u.home, spec.hostname or spec.id[:12], spec.tty)
        workdir = prepare_workdir(spec.workdir, u)
        os.chdir(workdir)
        if not spec.argv:
            raise ExecFailed("no command specified", 126)
        path = find_executable(spec.argv[0], env)
        if spec.init:
            # The child execs the user's process only once this init has dropped to the container's user,
            # capabilities and seccomp filter: before, PID 1 would hold the engine's privileges beside it.
            dropped_r, dropped_w = os.pipe()
            child = os.fork()
            if child:
                os.close(dropped_r)
                sync.close()  # the supervisor sees EOF once the child has exec'd
                tiny_init(child, u, mask, bpf, dropped_w)
            os.close(dropped_w)
            if os.read(dropped_r, 1) != INIT_DROPPED:
                raise ExecFailed("--init: the container's init could not drop the engine's privileges", 126)
            os.close(dropped_r)
            os.setpgid(0, 0)
            if spec.tty:
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(0, os.getpid())
                signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        switch_user(u, mask)
        os.umask(0o022)
        if bpf:
            seccomp.install(bpf)
        os.execve(path, spec.argv, dict(e.split("=", 1) for e in env))
    except ExecFailed as e:
        _fail(sync, e.code, str(e))
    except BaseException as e:  # noqa: BLE001 - anything else is a setup failure to report, not a traceback
        _fail(sync, 128, f"{type(e).__name__}: {e}")


INIT_DROPPED = b"D"


def tiny_init(main_child: int, u: user.ExecUser, cap_mask: int, bpf: bytes | None, dropped: int) -> None:
    """--init: stay PID 1 (this process, already pivoted into the container), forward signals to the one
    child, reap every orphan, and exit with the child's status, as tini does. Never returns.

    Like Docker's docker-init, it runs as the container's process would: the container's user, capabilities
    and seccomp filter, so nothing in the container keeps the engine's privileges. `dropped` is the pipe the
    child waits on before it execs: written once all three are in place (closed unwritten if they fail)."""
    try:
        switch_user(u, cap_mask)
        if bpf:
            seccomp.install(bpf)
        os.write(dropped, INIT_DROPPED)
    finally:
        os.close(dropped)

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(main_child, sig)
        except ProcessLookupError:
            pass

    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGTTOU, signal.SIGTTIN):
            try:
                signal.signal(sig, forward)
            except (OSError, ValueError):
                pass
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == main_child:
            os._exit(
                128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
            )


def _fail(sync: socket.socket, code: int, message: str) -> None:
    try:
        sync.sendall(b"E%d %s" % (code, message.encode(errors="replace")))
    finally:
        os._exit(code)
