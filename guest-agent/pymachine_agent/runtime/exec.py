"""docker exec: a fresh helper process joins the container's cgroup and namespaces (setns, mount last),
forks (the pid namespace applies to children only) and the child drops privileges and execs. The helper waits
and exits with the child's status, so the agent sees an ordinary child process with pipes or a pty."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass, field

from pymachine_agent.runtime import capabilities, libc, namespaces, process, seccomp, user
from pymachine_agent.runtime.errors import RuntimeErr
from pymachine_agent.runtime.spec import ContainerSpec, ExecSpec

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def boot_command(module: str, *args: str) -> list[str]:
    """argv that runs `module.main(args)` in a fresh interpreter that skips site-packages (faster start,
    and the agent must run on the guest's bare Python anyway)."""
    # The package's own __init__ is skipped (a bare module object stands in for it): the helpers need only
    # the runtime modules, and every millisecond of interpreter start is paid on each start/exec.
    code = (
        "import sys, types; p = types.ModuleType('pymachine_agent'); "
        f"p.__path__ = [{_PKG_PARENT + '/pymachine_agent'!r}]; sys.modules.setdefault('pymachine_agent', p); "
        f"from {module} import main; main(sys.argv[1:])"
    )
    return [sys.executable, "-S", "-c", code, *args]


@dataclass
class ExecPayload:
    pid: int  # the container's init (host pid)
    cgroup: str  # cgroup folder to join ("" when cgroups are not in use)
    argv: list[str]
    env: list[str]
    user: str
    group_add: list[str]
    workdir: str
    tty: bool
    cap_mask: int
    hostname: str
    seccomp: str = ""  # the container's seccomp filter (hex of seccomp.filter_for's bytes); "" = none
    pty_sock: int = -1  # tty: socket on which the helper sends back the pty master
    console_size: list[int] = field(default_factory=list)  # tty: [height, width] before the process runs


class ExecProcess:
    """A running exec. With a tty, `pty` is the master (read/write); otherwise `stdin` (None unless asked),
    `stdout` and `stderr` are the agent's ends of pipes (raw fds)."""

    def __init__(self, payload: ExecPayload, want_stdin: bool, detach: bool) -> None:
        self.pty: int | None = None
        self._pty_lock = threading.Lock()  # a resize (API thread) never uses the number after close frees it
        self.stdin = self.stdout = self.stderr = None
        argv = boot_command("pymachine_agent.runtime.exec", json.dumps(payload.__dict__))
        if payload.tty:
            # The helper opens the pty inside the container (its /dev/ptmx is the container's devpts instance,
            # so `tty` there names it, as with runc's console socket) and passes the master back.
            ours, theirs = socket.socketpair()
            payload.pty_sock = theirs.fileno()
            argv = boot_command("pymachine_agent.runtime.exec", json.dumps(payload.__dict__))
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
            theirs.close()
            ours.settimeout(60)
            try:
                _, fds, _, _ = socket.recv_fds(ours, 16, 1)
            except OSError:
                fds = []
            finally:
                ours.close()
            if not fds:
                err = self._popen.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
                self._popen.wait()
                raise RuntimeErr(err or "exec: the helper could not open a terminal in the container")
            self.pty = fds[0]
        else:
            out = subprocess.DEVNULL if detach else subprocess.PIPE
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if want_stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            p = self._popen
            self.stdin = p.stdin.fileno() if p.stdin else None  # type: ignore[assignment]
            self.stdout = p.stdout.fileno() if p.stdout else None  # type: ignore[assignment]
            self.stderr = p.stderr.fileno() if p.stderr else None  # type: ignore[assignment]
        self.pid = self._popen.pid

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def poll(self) -> int | None:
        return self._popen.poll()

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def resize(self, height: int, width: int) -> None:
        with self._pty_lock:
            if self.pty is not None:
                fcntl.ioctl(self.pty, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close_stdin(self) -> None:
        """EOF on the process's stdin."""
        if self._popen.stdin:
            self._popen.stdin.close()
            self.stdin = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self._popen.send_signal(sig)

    def kill_all(self) -> None:
        """SIGKILL the process in the container (and its process group: it made its own session) and then
        the helper. The helper forwards catchable signals only, so killing the helper alone would leave
        the process running in the container (a timed-out health probe must not)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                children = [int(x) for x in f.read().split()]
        except OSError:
            children = []
        for child in children:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child, signal.SIGKILL)
                    break
                except OSError:
                    continue
        self._popen.kill()

    def close(self) -> None:
        for f in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if f:
                f.close()
        with self._pty_lock:
            if self.pty is not None:
                os.close(self.pty)
                self.pty = None


def main(argv: list[str]) -> None:
    """The helper: runs as a fresh, single-threaded process (setns into a mount namespace needs that)."""
    p = ExecPayload(**json.loads(argv[0]))
    bpf = bytes.fromhex(p.seccomp) if p.seccomp else None
    try:
        if p.cgroup:
            with open(os.path.join(p.cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
        fds = namespaces.open_container_namespaces(p.pid)
        for fd, nstype in fds:
            libc.setns(fd, nstype)
            os.close(fd)
    except OSError as e:
        sys.stderr.write(f"exec: cannot enter the container: {e}\n")
        os._exit(126)
    slave = -1
    if p.pty_sock >= 0:
        try:
            master, slave = os.openpty()  # now resolves to the container's /dev/ptmx
            process.set_winsize(slave, p.console_size)
        except OSError as e:
            sys.stderr.write(f"exec: cannot open a terminal in the container: {e}\n")
            os._exit(126)
        with socket.socket(fileno=p.pty_sock) as sock:
            socket.send_fds(sock, [b"M"], [master])
        os.close(master)
    child = os.fork()
    if child == 0:
        if slave >= 0:
            for target in (0, 1, 2):
                os.dup2(slave, target)
        _child(p, bpf)
    if slave >= 0:
        os.close(slave)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status))


def _child(p: ExecPayload, bpf: bytes | None) -> None:
    try:
        for sig in range(1, signal.NSIG):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        os.setsid()
        if p.tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.closerange(3, 65536)
        u = user.resolve(p.user, "/", p.group_add)
        env = process.build_env(p.env, [], u.home, p.hostname, p.tty)
        os.chdir(p.workdir or "/")
        path = process.find_executable(p.argv[0], env)
        process.switch_user(u, p.cap_mask)
        if bpf:
            seccomp.install(bpf)
        os.execve(path, p.argv, dict(e.split("=", 1) for e in env))
    except process.ExecFailed as e:
        sys.stderr.write(f"OCI runtime exec failed: exec failed: unable to start container process: {e}\n")
        os._exit(e.code)
    except LookupError as e:
        sys.stderr.write(f"unable to find user {p.user}: {e}\n")
        os._exit(126)
    except BaseException as e:  # noqa: BLE001
        sys.stderr.write(f"exec failed: {type(e).__name__}: {e}\n")
        os._exit(126)


def make_payload(pid: int, cgroup: str, spec: ExecSpec, ctr: ContainerSpec) -> ExecPayload:
    """ExecPayload for `spec` in `ctr`: the container's env, user and workdir unless overridden."""
    return ExecPayload(
        pid=pid,
        cgroup=cgroup,
        argv=list(spec.argv),
        env=[*ctr.env, *spec.env],
        user=spec.user or ctr.user,
        group_add=list(ctr.group_add),
        workdir=spec.workdir or ctr.workdir or "/",
        tty=spec.tty,
        cap_mask=capabilities.resolve(ctr.cap_add, ctr.cap_drop, ctr.privileged or spec.privileged),
        hostname=ctr.hostname or ctr.id[:12],
        seccomp=_filter_hex(ctr),
        console_size=list(spec.console_size),
    )


def _filter_hex(ctr: ContainerSpec) -> str:
    """The container's own filter (compiled for its capabilities, cached in the agent), also for
    `exec --privileged`, as runc does: it adds capabilities, not syscalls."""
    if ctr.privileged:
        return ""
    bpf = seccomp.filter_for(ctr.seccomp, capabilities.resolve(ctr.cap_add, ctr.cap_drop))
    return bpf.hex() if bpf else ""
