"""The one function that runs subprocesses: logging, timeouts and the error shape live here."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import PymachineError

log = logging.getLogger(__name__)

# Which Debian package provides each command we shell out to, for the "install it" hint.
PACKAGE_OF = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "cpio": "cpio",
    "busybox": "busybox-static",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "dpkg-deb": "dpkg",
    "zstd": "zstd",
}


def require(command: str) -> str:
    """Return the full path of `command`, or fail saying which package to install."""
    found = shutil.which(command)
    if found:
        return found
    package = PACKAGE_OF.get(command, command)
    raise PymachineError(
        f"the command '{command}' is missing",
        hint=f"install it: apt-get install {package}  (or run packaging/install.sh)",
    )


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float | None = 600,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise PymachineError with its exit code and the tail of its stderr.

    `on_line`: see each line of its output (stdout and stderr merged, into `stderr`) as it is written, for a
    long step whose progress a person wants to watch (mmdebstrap)."""
    args = [str(a) for a in argv]
    require(args[0])
    log.debug("run: %s", shlex.join(args))
    if on_line is not None:
        result = _run_lines(args, on_line, timeout, input, cwd, env, log_path)
        return _checked(args, result, check, log_path)
    try:
        result = subprocess.run(
            args,
            input=input,
            capture_output=capture,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PymachineError(
            f"'{shlex.join(args[:3])}…' did not finish within {timeout:.0f} s", log_path=log_path
        ) from exc
    if log_path is not None and capture:
        with open(log_path, "ab") as fh:
            fh.write(f"$ {shlex.join(args)}\n".encode())
            fh.write(result.stdout or b"")
            fh.write(result.stderr or b"")
    return _checked(args, result, check, log_path)


def _checked(
    args: list[str], result: subprocess.CompletedProcess[bytes], check: bool, log_path: Path | None
) -> subprocess.CompletedProcess[bytes]:
    if check and result.returncode != 0:
        tail = (result.stderr or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise PymachineError(
            f"'{Path(args[0]).name}' failed with exit status {result.returncode}"
            + (": " + " / ".join(tail) if tail else ""),
            log_path=log_path,
        )
    return result


def _run_lines(
    args: list[str],
    on_line: Callable[[str], None],
    timeout: float | None,
    input: bytes | None,
    cwd: Path | str | None,
    env: dict[str, str] | None,
    log_path: Path | None,
) -> subprocess.CompletedProcess[bytes]:
    child = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
    )
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        child.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    out = bytearray()
    try:
        if child.stdin is not None:
            child.stdin.write(input or b"")
            child.stdin.close()
        assert child.stdout is not None
        for raw in child.stdout:
            out += raw
            on_line(raw.decode(errors="replace").rstrip("\n"))
        child.wait()
    finally:
        if timer:
            timer.cancel()
    if fired.is_set():
        raise PymachineError(
            f"'{shlex.join(args[:3])}…' did not finish within {timeout:.0f} s", log_path=log_path
        )
    if log_path is not None:
        with open(log_path, "ab") as fh:
            fh.write(f"$ {shlex.join(args)}\n".encode() + bytes(out))
    return subprocess.CompletedProcess(args, child.returncode, b"", bytes(out))
