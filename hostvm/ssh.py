"""SSH to a machine with pinned keys: a per-machine ed25519 client key, and the guest's host key generated on
the host at create, delivered in the seed and pinned in `known_hosts`. Any other host key is refused; nothing
is ever auto-accepted.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths, store
from .errors import HostKeyMismatch, NotFoundError, PymachineError

if TYPE_CHECKING:
    # paramiko and cryptography (0.1 s) are imported by the functions that connect or make a key: `list`,
    # `ssh` (OpenSSH's client) and `ssh-config` use this module without them.
    import paramiko

USER = "root"
HOST = "127.0.0.1"
KEEPALIVE_S = 15


def host_alias(name: str) -> str:
    """The name under which the host key is pinned: independent of the port, which may change per start."""
    return f"pymachine-{name}"


def generate_keypair(private_path: Path, comment: str) -> str:
    """Write an OpenSSH ed25519 private key (0600) and its `.pub`; return the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    Path(f"{private_path}.pub").write_text(line + "\n")
    return line


def create_keys(name: str) -> None:
    """Client key, guest host key and the pinned known_hosts line for machine `name`."""
    mp = paths.machine(name)
    generate_keypair(mp.ssh_key, f"pymachine@{name}")
    host_pub = generate_keypair(mp.host_key, f"root@{name}")
    keytype, blob = host_pub.split()[:2]
    fd = os.open(mp.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{host_alias(name)} {keytype} {blob}\n")


def pinned_host_key(name: str) -> paramiko.PKey:
    """The host key from the machine's known_hosts (the pin), not from the .pub file next to it."""
    import paramiko

    mp = paths.machine(name)
    try:
        for line in mp.known_hosts.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == host_alias(name):
                return paramiko.PKey.from_type_string(fields[1], _b64(fields[2]))
    except FileNotFoundError:
        pass
    raise PymachineError(
        f"machine '{name}' has no pinned host key ({mp.known_hosts})",
        hint=f"the machine's files are damaged: recreate it (pymachine delete --force {name})",
    )


def endpoint(name: str) -> tuple[str, int, str]:
    """(host, port, user) to reach machine `name`: a VM's forwarded port on loopback as root, or the
    address that `create --driver ssh` recorded for a machine on another host (remote_host.py)."""
    from . import remote_host  # here: remote_host imports this module

    return remote_host.endpoint(name) or (HOST, ssh_port(name), USER)


def ssh_port(name: str) -> int:
    state = store.read_json(paths.machine(name).state, {}) or {}
    port = state.get("ssh_port")
    if not port:
        raise NotFoundError(f"machine '{name}' has no SSH port", hint=f"start it: pymachine start {name}")
    return int(port)


def read_banner(port: int, timeout: float = 3.0, name: str | None = None) -> bool:
    """True once the guest's sshd speaks. slirp accepts on the host side before the guest listens, so a TCP
    connect proves nothing: only the `SSH-2.0` identification line does. `name`: through its libvirt host's
    link when the VM runs on another host (remote_libvirt.py)."""
    try:
        with _socket_to(name, port, timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"SSH-2.0")
    except OSError:
        return False


def _socket_to(name: str | None, port: int, timeout: float) -> Any:
    """A TCP socket to the guest's forwarded SSH port on loopback, or a channel through the libvirt host."""
    from . import remote_libvirt

    uri = remote_libvirt.machine_uri(name) if name else None
    if uri:
        return remote_libvirt.channel(name, uri, port, timeout)  # type: ignore[arg-type]
    return socket.create_connection((HOST, port), timeout=timeout)


def connect(name: str, *, port: int | None = None, timeout: float = 30.0) -> paramiko.SSHClient:
    """An authenticated client for machine `name`; the host key must be the pinned one (RejectPolicy)."""
    import paramiko

    mp = paths.machine(name)
    host, default_port, user = endpoint(name)
    port = port or default_port
    from .machines import wake  # here: machines imports this module

    wake(name, "ssh")  # a machine the resource saver paused answers no SSH until resumed
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    pinned = pinned_host_key(name)
    client.get_host_keys().add(f"[{host}]:{port}" if port != 22 else host, pinned.get_name(), pinned)
    try:
        from . import remote_libvirt

        uri = remote_libvirt.machine_uri(name)
        sock = remote_libvirt.channel(name, uri, port, timeout) if uri else None
        client.connect(
            host,
            port=port,
            sock=sock,
            username=user,
            key_filename=str(mp.ssh_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyMismatch(name, mp.known_hosts) from exc
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise PymachineError(
            f"cannot log in to machine '{name}' on {host}:{port}: {exc}",
            hint=f"is it running? try: pymachine start {name}",
            log_path=mp.console_log,
        ) from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_S)
    return client


def exec_command(
    client: paramiko.SSHClient, command: str, timeout: float | None = 60, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    """Run `command` over an open client, feeding it `stdin` when given; (exit status, stdout, stderr)."""
    inp, out, err = client.exec_command(command, timeout=timeout)
    if stdin is not None:
        inp.write(stdin)
        inp.channel.shutdown_write()
    stdout, stderr = out.read(), err.read()
    return out.channel.recv_exit_status(), stdout, stderr


def run(name: str, command: str, timeout: float | None = 60) -> tuple[int, bytes, bytes]:
    client = connect(name)
    try:
        return exec_command(client, command, timeout)
    finally:
        client.close()


def remote_command(argv: list[str]) -> str:
    """One argument is passed as written (a shell line, as `ssh host 'a | b'`); several are quoted so the
    guest sees exactly that argv (`pymachine ssh -- sh -c 'exit 3'`)."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def ssh_argv(name: str, command: list[str] | None = None) -> list[str]:
    """The OpenSSH command line for machine `name`, with the same pin (StrictHostKeyChecking=yes)."""
    binary = shutil.which("ssh")
    if not binary:
        raise PymachineError(
            "the OpenSSH client 'ssh' is missing", hint="install it: apt-get install openssh-client"
        )
    mp = paths.machine(name)
    host, port, user = endpoint(name)
    argv = [
        binary,
        # No ssh_config at all (neither ~/.ssh/config nor /etc/ssh/ssh_config): a `Host *` block there could
        # forward the user's agent or X display into the VM, open forwards, run a ProxyCommand or a
        # LocalCommand, or share a control master. The options below then only restate the safe defaults,
        # so that a future OpenSSH default or an -o given before ours cannot change them.
        "-F",
        "/dev/null",
        "-i",
        str(mp.ssh_key),
        "-p",
        str(port),
        *_options(**client_options(name)),
    ]
    if command:
        argv += ["--", f"{user}@{host}", remote_command(command)]
    else:
        argv += ["-t", "--", f"{user}@{host}"]
    return argv


def client_options(name: str) -> dict[str, str]:
    """OpenSSH options for machine `name`: the pinned host key and nothing of the user's agent, X display or
    forwards (for `pymachine ssh` and the block `pymachine ssh-config` prints)."""
    mp = paths.machine(name)
    return dict(
        IdentitiesOnly="yes",
        IdentityAgent="none",  # never offer or even contact the user's agent
        BatchMode="yes",
        UserKnownHostsFile=str(mp.known_hosts),
        GlobalKnownHostsFile="/dev/null",
        StrictHostKeyChecking="yes",
        UpdateHostKeys="no",
        HostKeyAlias=host_alias(name),
        ForwardAgent="no",
        ForwardX11="no",
        ClearAllForwardings="yes",
        Tunnel="no",
        PermitLocalCommand="no",
        ProxyCommand=_proxy(name),
        ProxyJump="none",
        ControlMaster="no",
        ControlPath="none",
        LogLevel="ERROR",
        ServerAliveInterval=str(KEEPALIVE_S),
    )


def _proxy(name: str) -> str:
    """`none`, or the hop through a remote libvirt host (its key pinned like the guest's)."""
    from . import remote_libvirt

    return remote_libvirt.proxy_command(name) or "none"


_NOT_IN_CONFIG = ("LogLevel", "ClearAllForwardings")


def config_block(name: str) -> str:
    """An ssh_config `Host` block for machine `name` (ssh, scp, rsync, editors' remote plugins): the same
    pinned key and options as `pymachine ssh`. The port is this start's (kept across starts while free)."""
    mp = paths.machine(name)
    host, port, user = endpoint(name)
    lines = [
        f"Host {host_alias(name)}",
        f"  HostName {host}",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {mp.ssh_key}",
        # Forwards the person asks for (-L, an editor's remote server tunnel) are theirs to open here.
        *(f"  {k} {v}" for k, v in client_options(name).items() if k not in _NOT_IN_CONFIG),
    ]
    return "\n".join(lines)


def _options(**options: str) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def wait_banner(port: int, deadline: float, name: str | None = None) -> bool:
    """Poll for the banner until `deadline`. Each attempt waits long for its answer: sshd forks and
    re-executes itself per connection, which under TCG on a loaded host takes many seconds, and a client that
    hangs up early never sees a banner (slirp closes at once when nothing listens: waiting costs nothing).
    On loopback the probes overlap instead (banner.py): one long probe sat in slirp's SYN back-off."""
    from . import banner, remote_libvirt

    if not (name and remote_libvirt.machine_uri(name)):
        return banner.wait(HOST, port, deadline)
    while time.monotonic() < deadline:
        if read_banner(port, timeout=min(30.0, max(0.5, deadline - time.monotonic())), name=name):
            return True
        time.sleep(0.3)
    return False


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)
