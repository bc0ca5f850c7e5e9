"""The direct-QEMU driver: one daemonized QEMU per machine, found again through its pidfile and QMP socket.

For hosts without libvirt (Windows/WHPX, macOS/HVF, a bare Linux). The command line is built by a pure
function (`qemu_argv`) with the same devices as the libvirt domain XML.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

from .. import paths, proc
from ..domain import TB_CACHE_MIB, VMSpec, domain_name, engine_port_args
from ..errors import PymachineError
from ..shares import virtiofsd_binary
from .base import Capabilities, Driver, DriverState
from .procscan import alive

log = logging.getLogger(__name__)
QEMU = "qemu-system-x86_64"


def qemu_argv(
    spec: VMSpec,
    pidfile: str,
    qmp_socket: str,
    binary: str = QEMU,
    platform: str = sys.platform,
    incoming: bool = False,
) -> list[str]:
    """The QEMU command line for `spec` on `platform` (pure; golden-tested next to the domain XML).
    `incoming`: wait for `migrate-incoming` on QMP (a restore) instead of booting."""
    # kvm, hvf and whpx pass through; TCG gets the small translation cache (see domain.TB_CACHE_MIB)
    accel = f"tcg,thread=multi,tb-size={TB_CACHE_MIB}" if spec.accel == "tcg" else spec.accel
    q = _opt
    return [
        binary,
        "-name", f"guest={domain_name(spec.name)},process={domain_name(spec.name)}",
        "-machine", spec.machine,
        "-accel", accel,
        "-cpu", "host" if spec.accel in ("kvm", "hvf") else "max",
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", spec.kernel,
        "-initrd", spec.initrd,
        "-append", spec.cmdline,
        "-drive", f"file={q(spec.disk)},if=virtio,format=qcow2,discard=unmap",
        "-drive", f"file={q(spec.seed)},if=virtio,format=raw,readonly=on",
        "-netdev", spec.netdev(),
        "-device", spec.nic(),
        *spec.private_net_args(),
        "-device", "virtio-rng-pci",
        # memory the guest frees goes back to the host (the guest reports free pages: docs/machines.md);
        # a guest short of memory deflates the give-back's balloon (memback.py) before its OOM killer runs
        "-device", "virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on",
        *_share_args(spec),
        *engine_port_args(spec),
        "-serial", f"file:{q(spec.console_log)}",
        "-qmp", f"unix:{q(qmp_socket)},server=on,wait=off",
        "-pidfile", pidfile,
        # QEMU for Windows has no -daemonize (nor -runas): there it must be started detached (not written yet)
        *([] if platform == "win32" else ["-daemonize"]),
        # after opening every file and socket as root, QEMU drops to this user for good (setgid, initgroups,
        # setuid) before the guest runs (QEMU >= 9.1 spells it `-run-with user=`; -runas still works there)
        *(["-runas", spec.runas] if spec.runas and platform != "win32" else []),
        *(["-incoming", "defer"] if incoming else []),
    ]  # fmt: skip


def _share_args(spec: VMSpec) -> list[str]:
    """virtiofs: guest RAM as a shared memfd (virtiofsd maps it) and one vhost-user-fs device per share;
    9p: QEMU serves the folder itself (mapped-xattr keeps guest owners in xattrs; readonly enforced here).
    (No restore here has shared RAM: this driver cannot unplug virtiofs devices, so it saves no such VM.)"""
    q = _opt
    args: list[str] = []
    if spec.shared_memory:
        args += [
            "-object", f"memory-backend-memfd,id=mem0,size={spec.memory_mib}M,share=on",
            "-numa", "node,memdev=mem0",
        ]  # fmt: skip
    for s in spec.shares:
        if s.transport == "virtiofs":
            args += [
                "-chardev", f"socket,id=fs-{s.tag},path={q(s.socket)}",
                "-device", f"vhost-user-fs-pci,chardev=fs-{s.tag},tag={s.tag},queue-size=1024",
            ]  # fmt: skip
        elif s.transport == "9p":
            ro = ",readonly=on" if s.readonly else ""
            args += [
                "-virtfs",
                f"local,path={q(s.path)},mount_tag={s.tag},security_model=mapped-xattr,id={s.tag}{ro}",
            ]
    return args


def _opt(value: str) -> str:
    """A path inside a QEMU option string: commas are doubled, or QEMU would split the option there."""
    return value.replace(",", ",,")


class QemuDriver(Driver):
    name = "qemu"
    # share_hotplug stays False: the vhost-user-fs devices sit on the root bus, which does not hot-plug
    capabilities = Capabilities(
        remote=False, graceful_shutdown=True, hostfwd_add=True, save_state=True, engine_port=True
    )

    def __init__(self) -> None:
        linux = sys.platform.startswith("linux")  # vhost-user needs Linux; QEMU on macOS has virtfs (9p)
        self.capabilities = replace(
            type(self).capabilities,
            virtiofs=linux and virtiofsd_binary() is not None,
            virtio_9p=sys.platform != "win32",
        )

    def describe(self) -> str:
        return "qemu (direct)"

    def start(self, spec: VMSpec, incoming: bool = False) -> None:
        if sys.platform == "win32":
            raise PymachineError("the direct-QEMU driver cannot daemonize QEMU on Windows yet")
        mp = paths.machine(spec.name)
        if self.state(spec.name) is DriverState.RUNNING:
            raise PymachineError(f"machine '{spec.name}' is already running (pid {self.pid(spec.name)})")
        qmp = paths.check_socket_path(mp.qmp_socket)
        for stale in (mp.qemu_pid, qmp, mp.engine_port):
            stale.unlink(missing_ok=True)
        log_file = mp.dir / "qemu.log"
        argv = qemu_argv(spec, str(mp.qemu_pid), str(qmp), incoming=incoming)
        proc.run(argv, timeout=60, log_path=log_file)

    # -- saved state: QEMU's migration stream into a file we open and hand over (QMP getfd), so QEMU needs
    # no permission on the machine folder even after dropping to its own user ------------------------------
    def save(self, machine: str, path: Path) -> int | None:
        """QEMU writes its migration stream into a pipe; a thread here writes it to `path` and computes its
        CRC-32 on the way (a second pass over the file after the save cost ~0.1-0.5 s of every `stop`)."""
        pid = self.pid(machine)
        if pid is None:
            raise PymachineError(f"machine '{machine}' is not running")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        tee = CrcTee(fd)
        try:
            with Qmp(paths.machine(machine).qmp_socket, timeout=30) as qmp:
                # the default bandwidth cap (32 MiB/s) would make a 1 GiB guest's save take many seconds
                qmp.command("migrate-set-parameters", {"max-bandwidth": 1 << 40})
                # paused first, as libvirt's save does: one pass over RAM, no rounds of re-sending dirty pages
                qmp.command("stop")
                try:
                    qmp.command("getfd", {"fdname": "pmsave"}, fd=tee.write_end)
                    tee.handed_over()  # QEMU has its own copy: its close (or exit) ends the stream
                    qmp.command("migrate", {"uri": "fd:pmsave"})
                    _wait_migration(qmp, "save")
                except PymachineError:
                    qmp.command("cont")  # the VM runs on; the caller gives the guest its shares back
                    raise
                qmp.command("quit")
            crc = tee.result(timeout=30)
        finally:
            tee.close()
            os.close(fd)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return crc

    def restore(self, spec: VMSpec, path: Path, paused: bool = False) -> None:
        self.start(spec, incoming=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            with Qmp(paths.machine(spec.name).qmp_socket, timeout=30) as qmp:
                qmp.command("getfd", {"fdname": "pmload"}, fd=fd)
                qmp.command("migrate-incoming", {"uri": "fd:pmload"})
                deadline = time.monotonic() + 120
                while True:
                    status = qmp.command("query-status")
                    state = status.get("status") if isinstance(status, dict) else None
                    if state == "running":
                        return
                    if state in ("paused", "postmigrate"):  # loaded; saved while paused (see save): run it
                        if paused:
                            return
                        qmp.command("cont")
                    if time.monotonic() > deadline:
                        raise PymachineError("QEMU did not finish loading the saved state")
                    time.sleep(0.05)
        except (OSError, ValueError) as exc:  # QEMU exits when the stream is bad: the socket closes
            self.force_stop(spec.name)
            raise PymachineError(f"QEMU could not load the saved state: {exc}") from exc
        except PymachineError:
            self.force_stop(spec.name)
            raise
        finally:
            os.close(fd)

    def state(self, machine: str) -> DriverState:
        return DriverState.RUNNING if self.pid(machine) is not None else DriverState.STOPPED

    def pid(self, machine: str) -> int | None:
        """The pidfile's pid, if that process is alive and is this machine's QEMU (not a reused pid)."""
        mp = paths.machine(machine)
        try:
            pid = int(mp.qemu_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        if not alive(pid):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            try:
                if str(mp.qmp_socket).encode() not in cmdline.read_bytes():
                    return None
            except OSError:
                return None
        return pid

    def request_shutdown(self, machine: str) -> None:
        try:
            qmp_command(paths.machine(machine).qmp_socket, "system_powerdown")
        except OSError as exc:
            log.debug("system_powerdown of %s: %s", machine, exc)

    def force_stop(self, machine: str) -> None:
        pid = self.pid(machine)
        if pid is None:
            return
        try:
            qmp_command(paths.machine(machine).qmp_socket, "quit")
        except OSError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def cleanup(self, machine: str) -> None:
        if self.pid(machine) is None:
            mp = paths.machine(machine)
            mp.qemu_pid.unlink(missing_ok=True)
            mp.qmp_socket.unlink(missing_ok=True)

    def pause(self, machine: str) -> None:
        qmp_command(paths.machine(machine).qmp_socket, "stop")  # a no-op on a stopped VM

    def unpause(self, machine: str) -> None:
        qmp_command(paths.machine(machine).qmp_socket, "cont")  # a no-op on a running VM

    def paused(self, machine: str) -> bool:
        if self.pid(machine) is None:
            return False
        try:
            status = qmp_command(paths.machine(machine).qmp_socket, "query-status")
        except OSError:
            return False
        return isinstance(status, dict) and status.get("status") == "paused"

    def monitor_command(self, machine: str, command: str) -> str:
        reply = qmp_command(
            paths.machine(machine).qmp_socket, "human-monitor-command", {"command-line": command}
        )
        return reply if isinstance(reply, str) else ""


class CrcTee:
    """A pipe whose bytes a thread copies into `fd`, computing their CRC-32 as they pass."""

    def __init__(self, fd: int) -> None:
        import fcntl  # not at the top: the module must import on Windows (no fcntl there)
        import threading

        self._read, self.write_end = os.pipe()
        with contextlib.suppress(OSError):  # bigger than the 64 KiB default: fewer wake-ups per MiB
            fcntl.fcntl(self.write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        self._fd = fd
        self._crc: int | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="save-tee", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        crc = 0
        try:
            while chunk := os.read(self._read, 1 << 20):
                crc = zlib.crc32(chunk, crc)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            self._crc = crc
        except OSError as exc:  # a full disk: the save fails (QEMU's next write gets EPIPE)
            self._error = exc
        finally:
            os.close(self._read)

    def handed_over(self) -> None:
        os.close(self.write_end)
        self.write_end = -1

    def result(self, timeout: float) -> int:
        self._thread.join(timeout)
        if self._error is not None:
            raise PymachineError(f"writing the saved state failed: {self._error}")
        if self._crc is None:
            raise PymachineError("the saved state's stream did not end")
        return self._crc

    def close(self) -> None:
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1
        self._thread.join(5)  # ended: QEMU closed its end or exited


def _wait_migration(qmp: Qmp, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.command("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled") or time.monotonic() > deadline:
            why = info.get("error-desc", status) if isinstance(info, dict) else status
            raise PymachineError(f"QEMU could not {what} the VM's state: {why}")
        time.sleep(0.02)


class Qmp:
    """One QMP session (file descriptors passed with `getfd` belong to the session that received them)."""

    def __init__(self, sock_path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(sock_path))
            self.reader = self.sock.makefile("rb")
            json.loads(self.reader.readline())  # greeting
            self.command("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def command(self, name: str, arguments: dict | None = None, fd: int | None = None) -> object:
        msg: dict = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        data = json.dumps(msg).encode() + b"\n"
        if fd is None:
            self.sock.sendall(data)
        else:
            socket.send_fds(self.sock, [data], [fd])
        while True:
            line = self.reader.readline()
            if not line:
                if name == "quit":
                    return None
                raise ConnectionError("QMP closed the connection")
            reply = json.loads(line)
            if "event" in reply:
                continue
            if "error" in reply:
                raise PymachineError(f"QMP {name} failed: {reply['error'].get('desc')}")
            return reply.get("return")


def qmp_command(sock_path: Path, command: str, arguments: dict | None = None, timeout: float = 5.0) -> object:
    """One QMP command: greeting, capabilities negotiation, the command; returns its `return` value."""
    with Qmp(sock_path, timeout) as qmp:
        return qmp.command(command, arguments)
