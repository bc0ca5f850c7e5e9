"""A "remote host" on this machine: a network namespace joined to this one by a veth pair, with a real OpenSSH
sshd listening on the namespace's address. What runs through it (the guest agent `create --driver ssh`
installs) runs on this kernel as root, in that namespace's network: its bridge, nftables table and published
ports on the namespace's loopback are out of this machine's sight, so only the SSH link reaches them.

Needs root (ip netns, sshd's privilege separation). Each instance picks its own namespace, link names and
/30 subnet; `stop()` kills every process left in the namespace and removes it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.hostagent_sshd import SSHD, write_config


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a network namespace and sshd need root"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install openssh-server)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "ip netns does not work here"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class NetnsHost:
    root: Path
    tag: str = field(default_factory=lambda: f"{random.randrange(16**4):04x}")
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.netns = f"pmrh-{self.tag}"
        self.octet = int(self.tag, 16) % 60 * 4  # a /30 of 10.253.x.0/24, per instance
        self.outer_ip = f"10.253.{int(self.tag[:2], 16)}.{self.octet + 1}"
        self.address = f"10.253.{int(self.tag[:2], 16)}.{self.octet + 2}"
        self.port = 22
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key_path = self.root / "host_key"
        self.client_key_path = self.root / "client_key"
        for path in (self.host_key_path, self.client_key_path):
            if not path.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (self.root / "authorized_keys").write_text((self.root / "client_key.pub").read_text())
        os.chmod(self.root / "authorized_keys", 0o600)

    @property
    def target(self) -> str:
        return f"root@{self.address}"

    def ns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace (what the remote host sees)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True)

    def start(self, setup: str = "") -> NetnsHost:
        _ip("netns", "add", self.netns)
        outer, inner = f"pmro{self.tag}", f"pmri{self.tag}"
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", self.netns)
        _ip("addr", "add", f"{self.outer_ip}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        for args in (("addr", "add", f"{self.address}/30", "dev", inner), ("link", "set", inner, "up"),
                     ("link", "set", "lo", "up")):  # fmt: skip
            _ip("-n", self.netns, *args)
        self.start_sshd(setup=setup)
        return self

    def start_sshd(self, host_key: Path | None = None, setup: str = "") -> None:
        """sshd with `host_key` (default: the pinned one). `setup` is shell run first in a private mount
        namespace of sshd's own, so that what it binds over (a fake python3, a /proc/filesystems without
        overlay) is what every session sees, and nothing else on this machine."""
        cfg = write_config(self.root, self.port, self.address, host_key or self.host_key_path)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.root / "sshd.log", "ab") as log:
            sshd = [SSHD, "-D", "-e", "-f", str(cfg)]
            if setup:
                sshd = [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    f'{setup}; exec "$@"',
                    "sh",
                    *sshd,
                ]
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *sshd],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-500:]}")

    def stop_sshd(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        self.stop_sshd()
        for _ in range(3):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _ip("link", "del", f"pmro{self.tag}", check=False)
        _ip("netns", "del", self.netns, check=False)


@contextlib.contextmanager
def netns_host(root: Path, setup: str = "") -> Iterator[NetnsHost]:
    host = NetnsHost(root).start(setup)
    try:
        yield host
    finally:
        host.stop()
