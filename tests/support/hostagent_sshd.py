"""A real OpenSSH sshd on 127.0.0.1 with a temp host key, for fast transport/forward/reconnect tests.

It stands in for the guest's sshd (same software, same `direct-streamlocal`/`direct-tcpip` handling), so the
host agent's SSH code is tested against the real server without booting a VM. Needs root (sshd's privilege
separation) and /usr/sbin/sshd.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def unavailable() -> str | None:
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "sshd's privilege separation needs root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, port: int, address: str, host_key: Path, extra: Sequence[str] = ()) -> Path:
    """root/sshd_config: key login only, forwarding allowed (direct-tcpip, direct-streamlocal)."""
    cfg = root / "sshd_config"
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "LogLevel ERROR",
        *extra,
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@dataclass
class LocalSshd:
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key_path = self.root / "host_key"
        self.client_key_path = self.root / "client_key"
        if not self.host_key_path.exists():
            for path in (self.host_key_path, self.client_key_path):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (self.root / "authorized_keys").write_text((self.root / "client_key.pub").read_text())
        os.chmod(self.root / "authorized_keys", 0o600)
        self.port = self.port or free_port()

    @property
    def client_key(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.client_key_path))

    @property
    def host_key(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.host_key_path))

    def config(self) -> Path:
        return write_config(self.root, self.port, "127.0.0.1", self.host_key_path, self.extra)

    def start(self) -> LocalSshd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's compiled-in privsep folder
        with open(self.root / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config())], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-500:]}")

    def stop(self) -> None:
        """Stop the listener and every session it forked (as a guest reboot or sshd crash would)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)
            self.proc = None
        # Per-connection children call setsid() and rename themselves: find them by the socket they hold.
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
        )
        for pid in set(re.findall(r"pid=(\d+)", out.stdout)):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self) -> paramiko.Transport:
        from pymachine.hostvm.hostagent.transport import open_transport

        return open_transport("127.0.0.1", self.port, "root", self.client_key, self.host_key)
