"""Boot the built guest image with plain qemu-system-x86_64 and log in over SSH, for vm-tier tests.

Reusable by any test that needs a bare guest without libvirt or the host agent:

    with boot_guest(ensure_image(), tmp_path) as guest:
        assert guest.run("true").status == 0

The guest gets a throwaway qcow2 overlay, a seed tar (docs/contracts.md §2) with fresh client and host keys,
and QEMU user networking with `restrict=on` plus one hostfwd to its sshd on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pymachine.hostvm import accel
from pymachine.hostvm.image import ImageManifest


@dataclass(frozen=True)
class KeyPair:
    private_openssh: bytes
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def generate(cls, comment: str) -> KeyPair:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return cls(private, f"{public.decode()} {comment}")

    def paramiko_key(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh.decode()))


def make_seed(
    path: Path, hostname: str, client: KeyPair, host: KeyPair, agent: dict[str, object] | None = None
) -> Path:
    """Write the seed tar (docs/contracts.md §2)."""
    members = {
        "hostname": f"{hostname}\n".encode(),
        "authorized_keys": f"{client.public_line}\n".encode(),
        "ssh_host_ed25519_key": host.private_openssh,
        "ssh_host_ed25519_key.pub": f"{host.public_line}\n".encode(),
        "agent.json": json.dumps(agent or {}).encode(),
    }
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


@dataclass
class BootedGuest:
    process: subprocess.Popen[bytes]
    ssh_port: int
    console_log: Path
    client: KeyPair
    host: KeyPair
    banner_seconds: float = 0.0
    _ssh: paramiko.SSHClient | None = field(default=None, repr=False)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def wait_for_console(self, text: str, timeout: float = 120) -> str:
        """Wait until `text` shows up on the serial console (the init prints PYMACHINE_READY last)."""
        deadline = time.monotonic() + timeout
        while text not in (seen := self.console()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"{text!r} not on the console within {timeout:.0f} s:\n{seen[-3000:]}")
            time.sleep(0.2)
        return seen

    def ssh(self) -> paramiko.SSHClient:
        """A logged-in client; the host key must be the seeded one (RejectPolicy for anything else)."""
        if self._ssh is None:
            client = paramiko.SSHClient()
            key_type, key_b64 = self.host.public_line.split()[:2]
            pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
            client.get_host_keys().add(f"[127.0.0.1]:{self.ssh_port}", key_type, pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                "127.0.0.1",
                port=self.ssh_port,
                username="root",
                pkey=self.client.paramiko_key(),
                allow_agent=False,
                look_for_keys=False,
                timeout=30,
                banner_timeout=60,
                auth_timeout=60,
            )
            self._ssh = client
        return self._ssh

    def run(self, command: str, timeout: float = 120) -> Result:
        _, stdout, stderr = self.ssh().exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return Result(stdout.channel.recv_exit_status(), out, err)

    def powerdown(self) -> None:
        """Press the ACPI power button through QMP (what libvirt's graceful shutdown does)."""
        with socket.socket(socket.AF_UNIX) as qmp:
            qmp.settimeout(30)
            qmp.connect(str(self.console_log.parent / "qmp.sock"))
            reader = qmp.makefile("rb")
            json.loads(reader.readline())  # greeting
            for command in ("qmp_capabilities", "system_powerdown"):
                qmp.sendall(json.dumps({"execute": command}).encode() + b"\n")
                while "return" not in (reply := json.loads(reader.readline())):
                    if "error" in reply:
                        raise RuntimeError(f"QMP {command}: {reply['error']}")

    def stop(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def wait_for_banner(port: int, process: subprocess.Popen[bytes], timeout: float, console: Path) -> None:
    """Ready = sshd's `SSH-2.0` banner read through the hostfwd (slirp accepts before the guest listens).

    Each attempt waits a little longer for the banner (2 s doubling to 30 s): short attempts matter early,
    because slirp retries its SYN to a guest whose network is not up yet with TCP back-off, so one long
    wait can sit seconds past the moment sshd listens; long attempts matter on a busy host, where sshd's
    per-connection re-exec alone can take several seconds under TCG."""
    deadline = time.monotonic() + timeout
    patience = 2.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else ""
            raise RuntimeError(f"QEMU exited with {process.returncode}; console:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(max(0.5, min(patience, deadline - time.monotonic())))
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except TimeoutError:
            patience = min(patience * 2, 30.0)
        except OSError:
            pass
        time.sleep(0.2)
    tail = console.read_text(errors="replace")[-3000:] if console.exists() else ""
    raise TimeoutError(f"no SSH banner on 127.0.0.1:{port} within {timeout:.0f} s; console:\n{tail}")


def qemu_argv(
    image: ImageManifest,
    disk: Path,
    seed: Path,
    ssh_port: int,
    console: Path,
    memory_mib: int,
    cpus: int,
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-machine", "q35",
        *accel.probe().qemu_args,
        "-m", str(memory_mib),
        "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-qmp", f"unix:{console.parent / 'qmp.sock'},server=on,wait=off",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", image.cmdline,
        "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        *extra,
    ]  # fmt: skip


@contextmanager
def boot_guest(
    image: ImageManifest,
    workdir: Path,
    *,
    memory_mib: int = 1024,
    cpus: int = 2,
    disk_bytes: int | None = None,
    hostname: str = "pmtest",
    boot_timeout: float = 180,
    extra_args: Sequence[str] = (),
) -> Iterator[BootedGuest]:
    """Boot the image on a throwaway overlay; QEMU is always killed on exit. `extra_args` go to QEMU after
    the standard devices (bench/channel_probe.py adds a virtio-serial port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "overlay.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.disk), str(disk)]
    if disk_bytes:
        create.append(str(disk_bytes))
    subprocess.run(create, check=True, capture_output=True)
    client, host = KeyPair.generate("pymachine-test-client"), KeyPair.generate("pymachine-test-host")
    seed = make_seed(workdir / "seed.tar", hostname, client, host)
    port = free_port()
    console = workdir / "console.log"
    argv = qemu_argv(image, disk, seed, port, console, memory_mib, cpus, extra_args)
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    guest = BootedGuest(process, port, console, client, host)
    try:
        wait_for_banner(port, process, boot_timeout, console)
        guest.banner_seconds = time.monotonic() - started
        yield guest
    finally:
        guest.stop()
