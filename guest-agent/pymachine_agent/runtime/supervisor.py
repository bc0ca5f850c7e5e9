"""The per-container supervisor (conmon's job): a small detached process that outlives the agent.

It creates the container's cgroup and pid namespace, forks the container's init (process.run_init), owns the
container's stdio (pipes, or a pty for -t), writes the json-file log, serves `attach.sock` in the container's
state folder (attach streams, kill, resize, ping), and when the container exits records the exit status and
OOMKilled in `run.json` (atomically) and exits. Restart policies are the agent's job (like dockerd's), since
the network hook must run again for every start.

Agent <-> supervisor start handshake over the inherited `ctl` socket (JSON lines):
  sup -> agent {"event": "ready", "pid", "supervisor_pid"}   (namespaces exist; the agent runs on_netns)
  agent -> sup {"go": true} | {"abort": "why"}
  sup -> agent {"event": "started", ...} | {"event": "error", "exit_code", "message"}
attach.sock: each connection sends one JSON line {"op": "attach"|"kill"|"resize"|"ping", ...}.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time

from pymachine_agent.runtime import devices, libc
from pymachine_agent.runtime.cgroups import Cgroup
from pymachine_agent.runtime.logs import JsonFileWriter, NullWriter, rfc3339nano
from pymachine_agent.runtime.process import run_init
from pymachine_agent.runtime.spec import ContainerSpec
from pymachine_agent.runtime.state import read_json, start_time, write_json

STDOUT, STDERR = 1, 2


def sock_path(ctr_dir: str, dir_fd: int) -> str:
    """A short path to <ctr_dir>/attach.sock through /proc/self/fd: unix socket paths are limited to 108
    bytes, and state folders in tests are deep."""
    return f"/proc/self/fd/{dir_fd}/attach.sock"


def _readline(sock: socket.socket, limit: int = 65536) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


class Client:
    def __init__(self, sock: socket.socket, req: dict) -> None:
        self.sock = sock
        self.stdin = bool(req.get("stdin"))
        self.streams = {STDOUT} if req.get("stdout", True) else set()
        if req.get("stderr", True):
            self.streams.add(STDERR)


class Supervisor:
    def __init__(
        self, ctr_dir: str, ctl: socket.socket, cg_root: str, cg_parent: str, handshake: bool = True
    ) -> None:
        self.handshake = handshake  # False: nothing to do between "namespaces ready" and exec (no hook)
        self.dir = ctr_dir
        self.ctl = ctl
        self.spec = ContainerSpec.from_json(read_json(os.path.join(ctr_dir, "config.json")))
        self.cg = Cgroup(self.spec.id, cg_root, cg_parent)
        self.run_path = os.path.join(ctr_dir, "run.json")
        self.run: dict = {"supervisor_pid": os.getpid(), "supervisor_start": start_time(os.getpid())}
        self.clients: list[Client] = []
        self.sel = selectors.DefaultSelector()
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.stdin_w: int | None = None
        self.master: int | None = None
        self.pid = 0

    def record(self, **fields: object) -> None:
        self.run.update(fields)
        write_json(self.run_path, self.run, durable=False)

    def tell(self, **msg: object) -> None:
        try:
            self.ctl.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:
            pass

    def main(self) -> None:
        spec = self.spec
        found = devices.resolve_all(spec.devices)  # first: a missing --device leaves no cgroup behind
        self.cg.create(spec.limits)
        if not spec.privileged:  # before the init joins: its own mounts and opens are already filtered
            devices.install(str(self.cg.v2_path) if self.cg.v2_path else None, devices.rules_for(spec, found))
        if spec.tty:  # the init opens the pty inside the container and sends us the master (see process.py)
            null = os.open("/dev/null", os.O_RDWR)
            child_stdio = (null, null, null)
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            if spec.open_stdin:
                in_r, self.stdin_w = os.pipe()
            else:
                in_r = os.open("/dev/null", os.O_RDONLY)
            child_stdio = (in_r, out_w, err_w)
            self.outputs[out_r] = STDOUT
            self.outputs[err_r] = STDERR
        self.dir_fd = os.open(self.dir, os.O_DIRECTORY | os.O_PATH)
        path = sock_path(self.dir, self.dir_fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(os.path.join(self.dir, "attach.sock"), 0o600)
        self.listener.listen(64)
        if spec.pid == "private":
            libc.unshare(libc.CLONE_NEWPID)
        elif spec.pid != "host":
            from pymachine_agent.runtime.namespaces import join

            join(spec.pid, libc.CLONE_NEWPID)
        sync, sync_child = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:
            sync.close()
            run_init(spec, self.dir, sync_child, child_stdio, self.cg, spec.tty, self.handshake)
        sync_child.close()
        for fd in set(child_stdio):
            os.close(fd)
        self.pidfd = os.pidfd_open(self.pid)
        msg, fds, _, _ = socket.recv_fds(sync, 65536, 1)
        if msg == b"P" and fds:
            self.master = self.stdin_w = fds[0]
            self.outputs[self.master] = STDOUT
            msg = sync.recv(65536)
        self.log: JsonFileWriter | NullWriter = (
            NullWriter()
            if spec.log_config.type == "none"
            else JsonFileWriter(
                os.path.join(self.dir, "container-json.log"),
                spec.log_config.max_size,
                spec.log_config.max_file,
            )
        )
        if self.handshake:  # without one the init goes straight on to exec: `msg` is already its result
            if msg != b"R":
                return self.failed(msg)
            self.record(pid=self.pid, pid_start=start_time(self.pid), status="created")
            self.tell(event="ready", pid=self.pid, supervisor_pid=os.getpid())
            answer = json.loads(_readline(self.ctl) or b"{}")
            if not answer.get("go"):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                return self.failed(b"E128 " + str(answer.get("abort", "start aborted by the agent")).encode())
            self.accept_pending()
            sync.sendall(b"G")
            msg = sync.recv(65536)
        if msg:
            return self.failed(msg)
        sync.close()
        self.record(pid=self.pid, pid_start=start_time(self.pid), status="running", started_at=rfc3339nano())
        self.tell(event="started", pid=self.pid, started_at=self.run["started_at"])
        self.ctl.close()
        self.loop()

    def failed(self, msg: bytes) -> None:
        """The init reported an error (b"E<code> <message>") or died before it could."""
        code, message = 128, "container init exited before it was ready"
        if msg.startswith(b"E"):
            head, _, text = msg[1:].partition(b" ")
            code, message = int(head or 128), text.decode(errors="replace")
        os.waitpid(self.pid, 0)
        self.record(status="exited", exit_code=code, error=message, finished_at=rfc3339nano())
        self.tell(event="error", exit_code=code, message=message)
        self.cleanup()

    def accept_pending(self) -> None:
        """Attach clients that connected before start: register them before the user process execs."""
        self.listener.setblocking(False)
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                break
            self.handle_conn(conn)

    def handle_conn(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            req = json.loads(_readline(conn) or b"{}")
        except (OSError, ValueError):
            conn.close()
            return
        op = req.get("op")
        reply: dict = {"ok": True, "pid": self.pid}
        try:
            if op == "attach":
                client = Client(conn, req)
                self.clients.append(client)
                if client.stdin and self.stdin_w is not None:
                    self.sel.register(conn, selectors.EVENT_READ, ("client", client))
                return
            if op == "kill":
                signal.pidfd_send_signal(self.pidfd, int(req.get("signal", signal.SIGKILL)))
            elif op == "resize" and self.master is not None:
                size = struct.pack("HHHH", int(req["height"]), int(req["width"]), 0, 0)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
            elif op != "ping":
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except (OSError, KeyError, ValueError) as e:
            reply = {"ok": False, "error": str(e)}
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def broadcast(self, stream: int, data: bytes) -> None:
        self.log.write("stdout" if stream == STDOUT else "stderr", data)
        frame = data if self.spec.tty else struct.pack(">BxxxL", stream, len(data)) + data
        for client in list(self.clients):
            if stream in client.streams:
                try:
                    client.sock.sendall(frame)
                except OSError:
                    self.drop(client)

    def drop(self, client: Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def stdin_eof(self, client: Client) -> None:
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        if self.spec.stdin_once and self.stdin_w is not None:
            if self.spec.tty:
                os.write(self.stdin_w, b"\x04")
            else:
                os.close(self.stdin_w)
                self.stdin_w = None

    def read_output(self, fd: int) -> bool:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO from a pty master once the last slave is closed
            data = b""
        if not data:
            self.sel.unregister(fd)
            os.close(fd)
            del self.outputs[fd]
            return False
        self.broadcast(self.outputs[fd], data)
        return True

    def loop(self) -> None:
        self.listener.setblocking(True)
        for fd in self.outputs:
            self.sel.register(fd, selectors.EVENT_READ, ("out", None))
        self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(self.pidfd, selectors.EVENT_READ, ("exit", None))
        status = None
        deadline = None
        while status is None or (self.outputs and time.monotonic() < deadline):
            for key, _ in self.sel.select(0.5 if status is not None else None):
                kind, client = key.data
                if kind == "out":
                    self.read_output(key.fd)
                elif kind == "listen":
                    conn, _ = self.listener.accept()
                    self.handle_conn(conn)
                elif kind == "client":
                    try:
                        data = client.sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.stdin_eof(client)
                    elif self.stdin_w is not None:
                        try:
                            os.write(self.stdin_w, data)
                        except OSError:
                            pass
                elif kind == "exit":
                    self.sel.unregister(self.pidfd)
                    _, status = os.waitpid(self.pid, 0)
                    # Output still buffered in the pipes is drained; a process outside the pid namespace that
                    # kept a pipe open must not hold the exit record back forever.
                    deadline = time.monotonic() + 2
        self.finish(status)

    def finish(self, status: int) -> None:
        self.log.close()
        if os.WIFSIGNALED(status):
            code = 128 + os.WTERMSIG(status)
        else:
            code = os.waitstatus_to_exitcode(status)
        oom = self.cg.oom_killed()
        self.record(status="exited", exit_code=code, oom_killed=oom, finished_at=rfc3339nano())
        for client in list(self.clients):
            self.drop(client)
        self.cleanup()

    def cleanup(self) -> None:
        self.cg.kill_all()
        self.cg.remove()
        try:
            os.unlink(os.path.join(self.dir, "attach.sock"))
        except FileNotFoundError:
            pass


def run_supervisor(
    ctr_dir: str, ctl: socket.socket, cg_root: str, cg_parent: str, handshake: bool = True
) -> None:
    """Body of the detached supervisor process (its own session; outlives whoever forked it)."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote auto-reaps; we must wait for our child
    try:
        Supervisor(ctr_dir, ctl, cg_root, cg_parent, handshake).main()
    except BaseException as e:  # noqa: BLE001 - report, then leave a record instead of a silent death
        import traceback

        traceback.print_exc()
        try:
            ctl.sendall(json.dumps({"event": "error", "exit_code": 128, "message": str(e)}).encode() + b"\n")
        except OSError:
            pass
        run = read_json(os.path.join(ctr_dir, "run.json"))
        if run.get("status") != "exited":
            run.update(status="exited", exit_code=128, error=f"supervisor: {e}", finished_at=rfc3339nano())
            write_json(os.path.join(ctr_dir, "run.json"), run)
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str]) -> None:
    """Entry point of a freshly exec'd supervisor (the zygote forks supervisors without an exec)."""
    ctr_dir, ctl_fd, cg_root, cg_parent = argv[0], int(argv[1]), argv[2], argv[3]
    ctl = socket.socket(fileno=ctl_fd)
    if os.fork():  # the agent reaps the launcher at once; the supervisor is reparented to init
        os._exit(0)
    run_supervisor(ctr_dir, ctl, cg_root, cg_parent)
