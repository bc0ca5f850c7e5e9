"""PID 1 of the pymachine guest, exec'd by /sbin/pymachine-init once the machine is set up.

It keeps the guest agent running (respawn with back-off), reaps every orphan, and powers the machine off on
SIGTERM/SIGPWR or the ACPI power button (how libvirt asks for a graceful shutdown). Standard library only.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import time

AGENT_DIR = "/opt/pymachine/agent"
AGENT_LOG = "/var/log/pymachine-agent.log"
AGENT_ARGV = ["/usr/bin/python3", "-m", "pymachine_agent", "serve"]
POWEROFF = "/sbin/pymachine-poweroff"
EV_KEY, KEY_POWER = 1, 116
INPUT_EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value


def say(message: str) -> None:
    os.write(1, f"pymachine-init: {message}\n".encode())


def spawn(argv: list[str], env: dict[str, str], log_path: str | None) -> int:
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    if log_path:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions += [(os.POSIX_SPAWN_OPEN, 1, log_path, flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)


class Agent:
    """The guest agent under a respawn loop: quick deaths back off up to 15 s so a broken agent (or one
    without `serve` yet) costs nothing while it keeps being retried."""

    def __init__(self) -> None:
        self.pid = 0
        self.started = 0.0
        self.delay = 1.0
        self.next_start = 0.0
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": AGENT_DIR,
            "PYTHONUNBUFFERED": "1",
            "PYMACHINE_SEED": "/run/seed",
        }

    def start(self) -> None:
        try:
            self.pid = spawn(AGENT_ARGV, self.env, AGENT_LOG)
            self.started = time.monotonic()
        except OSError as exc:
            say(f"cannot start the guest agent: {exc}")
            self.exited(None)

    def exited(self, status: int | None) -> None:
        ran = time.monotonic() - self.started
        self.pid = 0
        self.delay = 1.0 if ran > 60 else min(self.delay * 2, 15.0)
        self.next_start = time.monotonic() + self.delay
        with open(AGENT_LOG, "a") as log:
            log.write(
                f"pymachine-init: agent exited (status {status}) after {ran:.1f} s; "
                f"restarting in {self.delay:.0f} s\n"
            )

    def timeout(self) -> float | None:
        return None if self.pid else max(0.0, self.next_start - time.monotonic())


def power_buttons() -> list[int]:
    """Open every input device that is an ACPI power button (needs the `button` and `evdev` modules)."""
    fds = []
    base = "/sys/class/input"
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if not name.startswith("event"):
            continue
        try:
            with open(f"{base}/{name}/device/name") as fh:
                if "power button" not in fh.read().lower():
                    continue
            fds.append(os.open(f"/dev/input/{name}", os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            continue
    return fds


def power_pressed(fd: int) -> bool:
    try:
        data = os.read(fd, INPUT_EVENT.size * 64)
    except BlockingIOError:
        return False
    for offset in range(0, len(data) - INPUT_EVENT.size + 1, INPUT_EVENT.size):
        _, _, kind, code, value = INPUT_EVENT.unpack_from(data, offset)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            return True
    return False


def main() -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPWR, signal.SIGINT, signal.SIGUSR2):
        signal.signal(sig, lambda signum, frame: pending.append(signum))

    agent = Agent()
    agent.start()
    buttons = power_buttons()
    os.write(1, b"PYMACHINE_READY\n")
    say(f"guest agent pid {agent.pid}; power button {'watched' if buttons else 'not found'}")
    powering_off = False

    while True:
        try:
            ready, _, _ = select.select([wake_r, *buttons], [], [], agent.timeout())
        except InterruptedError:
            ready = []
        if wake_r in ready:
            os.read(wake_r, 512)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == agent.pid:
                agent.exited(os.waitstatus_to_exitcode(status))
        stop = any(s != signal.SIGCHLD for s in pending) or any(
            power_pressed(fd) for fd in buttons if fd in ready
        )
        pending.clear()
        if stop and not powering_off:
            powering_off = True
            say("power off requested")
            spawn([POWEROFF], {"PATH": agent.env["PATH"]}, None)
        if not powering_off and not agent.pid and agent.timeout() == 0.0:
            agent.start()


if __name__ == "__main__":
    sys.exit(main())
