"""The host's platform-dependent pure parts, fed each platform's facts: engine addresses (named pipe on
Windows), QEMU's argv without -daemonize/-runas on Windows, macOS's 104-byte socket paths, and the one lock
helper every pid file and build cache uses (exercised for real here, across processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pymachine.hostvm import endpoints, locks, paths
from pymachine.hostvm.domain import VMSpec
from pymachine.hostvm.drivers.qemu import qemu_argv
from pymachine.hostvm.errors import PymachineError

SPEC = VMSpec(
    name="dev", cpus=2, memory_mib=1024, kernel="/c/vmlinuz", initrd="/c/initrd.img", cmdline="console=ttyS0",
    disk="/m/disk.qcow2", seed="/m/seed.tar", console_log="/m/console.log", ssh_port=40022, accel="tcg",
    uid=1000, gid=1000, owner="/m",
)  # fmt: skip


def test_engine_address_is_a_named_pipe_on_windows(pymachine_home: Path) -> None:
    assert endpoints.engine_address("dev", "win32") == "npipe:////./pipe/pymachine-dev"
    assert endpoints.pipe_path("dev") == r"\\.\pipe\pymachine-dev"
    for platform in ("linux", "darwin"):
        assert endpoints.engine_address("dev", platform) == f"unix://{pymachine_home}/m/dev/docker.sock"


def test_qemu_argv_on_windows_has_no_daemonize_nor_runas() -> None:
    spec = replace(SPEC, runas="pymachine-qemu", accel="whpx")
    windows = qemu_argv(spec, "/m/qemu.pid", "/m/qmp.sock", platform="win32")
    assert "-daemonize" not in windows and "-runas" not in windows
    assert windows[windows.index("-accel") + 1] == "whpx"
    linux = qemu_argv(spec, "/m/qemu.pid", "/m/qmp.sock", platform="linux")
    assert "-daemonize" in linux and linux[linux.index("-runas") + 1] == "pymachine-qemu"
    # the rest of the command line is the same machine
    assert [a for a in linux if a not in ("-daemonize", "-runas", "pymachine-qemu")] == windows


def test_socket_path_limits() -> None:
    assert paths.socket_path_limit("darwin") == 103
    assert paths.socket_path_limit("linux") == 107
    assert paths.socket_path_limit("freebsd15") == 103  # unknown: the tightest


def test_macos_default_home_keeps_every_socket_within_104_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The longest machine name (31) under a long user name (32) in ~/.pymachine, macOS's default home."""
    monkeypatch.delenv("PYMACHINE_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", "/Users/" + "u" * 32)
    mp = paths.machine("m" * 31)
    assert str(paths.home()) == "/Users/" + "u" * 32 + "/.pymachine"
    for sock in (mp.docker_socket, mp.control_socket, mp.qmp_socket):
        assert paths.check_socket_path(sock, "darwin") == sock


def test_a_socket_past_macos_limit_is_refused_there_only(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = Path("/" + "d" * 91 + "/docker.sock")  # 103 < 104 bytes < 108
    assert len(str(sock)) == 103 + 1
    with pytest.raises(PymachineError, match="too long"):
        paths.check_socket_path(sock, "darwin")
    assert paths.check_socket_path(sock, "linux") == sock


HOLD = """
import os, sys
from pymachine.hostvm import locks
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
assert locks.try_lock(fd)
os.write(fd, f"{os.getpid()}\\n".encode())
print("held", flush=True)
sys.stdin.read()
"""


def test_lock_is_seen_from_another_process_and_released_by_its_death(tmp_path: Path) -> None:
    pid_file = tmp_path / "ha.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(pid_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        fd = os.open(pid_file, os.O_RDONLY)
        try:
            assert not locks.try_lock(fd, shared=True)
            assert locks.read_pid(fd) == holder.pid
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    with locks.held(pid_file) as fd:  # the dead holder's lock went with it: this does not wait
        assert locks.read_pid(fd) == holder.pid
