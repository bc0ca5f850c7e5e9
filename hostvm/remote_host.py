"""Machines on existing Linux hosts (`create NAME --driver ssh --host USER@HOST[:PORT]`, docker-machine's
generic driver): the guest agent runs on that host's kernel, no VM. Everything else is as for a VM: the host
agent keeps one SSH link to the host, forwards the engine socket and published ports to this computer's
localhost, and `start`/`stop`/`delete` act on the agent's supervisor there.

The host's SSH key is pinned at create (shown to the person, trust on first use, or checked against
`--host-key`) and every later connection must present it (ssh.py). `remote.json` in the machine folder records
where the host is and what was installed there (remote_install.Layout).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from . import config as cfgmod
from . import paths, remote_install, remote_probe, ssh, store
from .errors import PymachineError, UsageError
from .progress import Progress, Stages

REMOTE_FILE = "remote.json"
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
AGENT_READY_S = 60.0
_HOST = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?")


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")


def parse_target(text: str) -> Target:
    """`USER@HOST[:PORT]` (`[v6]:PORT` for IPv6); the user defaults to root, the port to 22."""
    match = _HOST.fullmatch(text.strip())
    port = int(match["port"]) if match and match["port"] else 22
    if not match or not 0 < port < 65536:
        raise UsageError(f"'{text}' is not USER@HOST[:PORT]", hint="e.g. --host root@build-1.lan:22")
    return Target(match["user"] or "root", match["host"].strip("[]"), port)


# -- what the rest of hostvm asks ---------------------------------------------------------------------------
def _record(name: str) -> dict[str, Any] | None:
    return store.read_json(paths.machine(name).dir / REMOTE_FILE, None)


def endpoint(name: str) -> tuple[str, int, str] | None:
    """(host, port, user) of a machine on another host; None for a VM (ssh.endpoint)."""
    rec = _record(name)
    return (str(rec["host"]), int(rec["port"]), str(rec["user"])) if rec else None


def layout(name: str) -> tuple[remote_install.Layout, str]:
    rec = _record(name)
    if not rec:
        raise PymachineError(f"machine '{name}' is not on another host")
    return remote_install.Layout(name, str(rec.get("python") or "/usr/bin/python3")), str(rec["supervisor"])


def agent_options(name: str) -> dict[str, Any]:
    """The host agent's settings for a machine on another host: the agent's own socket there, that host's
    clock left alone (it is not ours to step), and no re-provisioning behind the person's back (`start`
    updates the sources, as create installed them)."""
    if not _record(name):
        return {}
    lay, _ = layout(name)
    return {"guest_socket": lay.socket, "reprovision": False, "set_clock": False}


# -- create -------------------------------------------------------------------------------------------------
def create(
    name: str,
    host: str,
    ssh_key: str | None = None,
    host_key: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pin the host's key, check the host, install the agent and its supervisor; the folder goes again if any
    step fails. Returns what create found (supervisor, warnings) for the front end to show."""
    say = progress or (lambda _m: None)
    if not cfgmod.NAME_PATTERN.fullmatch(name):
        raise UsageError(f"'{name}' must be 1-31 characters of a-z, 0-9 and '-', not starting with '-'")
    target = parse_target(host)
    key_path = _client_key(ssh_key)
    mp = paths.machine(name)
    if mp.dir.exists():
        raise UsageError(
            f"machine '{name}' already exists", hint=f"pick another name, or: pymachine delete {name}"
        )
    stages = Stages(["host key", "host checks", "agent install"], say, source="create")
    with stages.step("host key"):
        offered = _server_key(target)
        _check_host_key(offered, host_key, target, say)
    paths.ensure_home()
    mp.dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        mp.dir.mkdir(mode=0o700)
    except FileExistsError:
        raise UsageError(f"machine '{name}' already exists") from None
    try:
        shutil.copyfile(key_path, mp.ssh_key)
        os.chmod(mp.ssh_key, 0o600)
        fd = os.open(mp.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{ssh.host_alias(name)} {offered.get_name()} {offered.get_base64()}\n")
        rec: dict[str, Any] = {"user": target.user, "host": target.host, "port": target.port}
        store.write_json(mp.dir / REMOTE_FILE, rec)
        client = _login(name)
        try:
            with stages.step("host checks"):
                found = _check_host(client, name)
            rec |= {"python": found.python, "supervisor": found.supervisor}
            store.write_json(mp.dir / REMOTE_FILE, rec)
            with stages.step("agent install"):
                lay = remote_install.Layout(name, found.python)
                _exec(client, remote_install.install(lay, found.supervisor), stdin=_agent_archive())
                _write_checksum(client, lay)
        finally:
            client.close()
        cfg = cfgmod.MachineConfig(
            name=name,
            cpus=int(found.facts.get("cpus") or 1),
            memory=_mib(found.facts.get("mem_kb")),
            disk=_mib(found.facts.get("disk_kb")),  # free below /var/lib, where the engine keeps its state
            driver="ssh",
            connect=f"ssh://{target}",  # where it runs, as `inspect` shows it (drivers/ssh.py)
            idle_suspend=0,  # a shared host is not ours to pause
        )
        store.write_json(mp.state, {"ssh_port": target.port, "accelerator": "host"})  # no VM: the host's CPUs
        store.write_json(mp.config, cfg.to_json())  # last: a folder without config.json is not a machine
    except BaseException:
        shutil.rmtree(mp.dir, ignore_errors=True)
        raise
    return {"supervisor": found.supervisor, "warnings": found.warnings, "host": str(target)}


def _mib(kib: str | None) -> int:
    """A size the host reported in KiB, rounded down to whole MiB (so that lists read 23G, not 24683792K)."""
    return int(kib or 0) // 1024 * cfgmod.MiB


def _client_key(given: str | None) -> Path:
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise UsageError(
                f"the SSH key {path} does not exist", hint="give a private key file: --ssh-key FILE"
            )
        return path
    return default_key("give one: --ssh-key FILE (its public half must be in the host's authorized_keys)")


def default_key(hint: str) -> Path:
    """The user's own key, as OpenSSH would try it first."""
    for candidate in DEFAULT_KEYS:
        path = Path.home() / ".ssh" / candidate
        if path.is_file():
            return path
    raise UsageError("no SSH key to log in with (~/.ssh/id_ed25519, id_ecdsa or id_rsa)", hint=hint)


def _server_key(target: Target, timeout: float = 20.0) -> paramiko.PKey:
    """The host key the server offers (no authentication yet: this is what trust on first use shows)."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise PymachineError(
            f"cannot reach {target.host}:{target.port}: {exc}", hint="is the host up and its sshd listening?"
        ) from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError) as exc:
        raise PymachineError(f"{target.host}:{target.port} does not speak SSH: {exc}") from exc
    finally:
        transport.close()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form (what `ssh-keygen -lf` prints)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _check_host_key(offered: paramiko.PKey, expected: str | None, target: Target, say: Progress) -> None:
    """`--host-key` is a `SHA256:` fingerprint, a public key line, or a file holding one (ssh-keyscan output,
    the host's /etc/ssh/ssh_host_*_key.pub). Without it the key is trusted on first use, and shown."""
    seen = f"{offered.get_name()} {fingerprint(offered)}"
    if not expected:
        say(f"trusting {target.host}'s host key on first use: {seen}")
        return
    text = expected.strip()
    if not text.startswith("SHA256:") and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text()
    wanted = {text} if text.startswith("SHA256:") else set()
    for line in text.splitlines():
        fields = line.split()
        for i, part in enumerate(fields[:-1]):
            if part.startswith(("ssh-", "ecdsa-")):
                try:
                    wanted.add(
                        fingerprint(paramiko.PKey.from_type_string(part, base64.b64decode(fields[i + 1])))
                    )
                except (ValueError, paramiko.SSHException):
                    continue
    if not wanted:
        raise UsageError(f"--host-key '{expected}' is neither a SHA256: fingerprint nor a public key (file)")
    if fingerprint(offered) not in wanted:
        raise PymachineError(
            f"{target.host}:{target.port} presented host key {seen}, not the one given with --host-key",
            hint="someone may be in the middle, or the key given is not this host's: check it on the host "
            "with 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub'",
        )
    say(f"{target.host}'s host key matches --host-key: {seen}")


def _login(name: str) -> paramiko.SSHClient:
    return ssh.connect(name, timeout=30)


def _check_host(client: paramiko.SSHClient, name: str) -> remote_probe.Findings:
    status, out, err = ssh.exec_command(client, "sh -s", timeout=60, stdin=remote_probe.PROBE.encode())
    found = remote_probe.findings(remote_probe.parse(out.decode(errors="replace")))
    lay = remote_install.Layout(name)
    taken, _, _ = ssh.exec_command(client, f"test -e {lay.code} -o -e {lay.state}", timeout=30)
    if taken == 0:
        found.problems.append(
            f"a machine '{name}' is installed on this host already ({lay.code}): "
            "pick another name, or delete it from the computer that created it"
        )
    if found.problems:
        raise PymachineError(
            "this host cannot run the pymachine agent: " + "; ".join(found.problems),
            hint="fix these on the host, then run the same create again",
        )
    return found


def _agent_archive() -> bytes:
    from .hostagent import provision

    return provision.agent_archive()


def _write_checksum(client: paramiko.SSHClient, lay: remote_install.Layout) -> None:
    """Beside the sources: `start` compares it with this computer's copy (and updates the host's)."""
    from .hostagent import provision

    _exec(client, f"printf %s {_quote(provision.local_checksum() or '')} > {lay.code}/.checksum")


def _exec(client: paramiko.SSHClient, script: str, stdin: bytes | None = None, timeout: float = 120) -> str:
    status, out, err = ssh.exec_command(client, "sh -c " + _quote(script), timeout=timeout, stdin=stdin)
    if status != 0:
        raise PymachineError(
            f"a command on the host failed ({status}): {err.decode(errors='replace').strip()[-400:]}",
            hint="run it again; if it keeps failing, look at the host's disk space and its /var/log",
        )
    return out.decode(errors="replace")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# -- start / stop / delete (machines.py calls these for a driver with capabilities.existing_host) ------------
def start(name: str, say: Progress, launcher: Any) -> None:
    """Update the agent's sources when they differ from this computer's copy, start its supervisor, wait for
    the engine socket, then the host agent (forwards)."""
    lay, supervisor = layout(name)
    names = ["ssh auth", "agent sources", "guest agent answers"] + (["host agent"] if launcher else [])
    stages = Stages(names, say)
    with stages.step("ssh auth"):
        client = _login(name)
    try:
        with stages.step("agent sources"):
            from .hostagent import provision

            ours = provision.local_checksum() or ""
            theirs = _exec(client, f"cat {lay.code}/.checksum 2>/dev/null || true").strip()
            if ours != theirs:
                _exec(client, remote_install.stop(lay, supervisor) + " || true")
                _exec(client, remote_install.update_sources(lay), stdin=_agent_archive())
                _write_checksum(client, lay)
        with stages.step("guest agent answers"):
            _exec(client, remote_install.start(lay, supervisor))
            _wait_agent(client, lay, time.monotonic() + AGENT_READY_S)
    finally:
        client.close()
    if launcher:
        with stages.step("host agent"):
            launcher.ensure_running(name, say)


def _wait_agent(client: paramiko.SSHClient, lay: remote_install.Layout, deadline: float) -> None:
    ping = f"PYTHONPATH={lay.code} {lay.python} -m pymachine_agent ping --socket {lay.socket} --timeout 5"
    while True:
        status, out, err = ssh.exec_command(client, ping, timeout=30)
        if status == 0:
            return
        if time.monotonic() >= deadline:
            raise PymachineError(
                f"the agent does not answer on {lay.socket}: {err.decode(errors='replace').strip()}",
                hint=f"read its log on the host: {lay.log}",
            )
        time.sleep(0.5)


def stop(name: str, say: Progress) -> None:
    """Stop the containers (as powering off a VM would), then the agent's supervisor."""
    lay, supervisor = layout(name)
    client = _login(name)
    try:
        for cid in _containers(client, lay, running_only=True):
            say(f"stopping container {cid[:12]}")
            _engine(client, lay, "POST", f"/containers/{cid}/stop?t=10")
        _exec(client, remote_install.stop(lay, supervisor))
    finally:
        client.close()


def delete(name: str, say: Progress) -> None:
    """Remove the containers through the engine, then everything `create` installed (remote_install)."""
    lay, supervisor = layout(name)
    client = _login(name)
    try:
        _exec(client, remote_install.start(lay, supervisor))  # the engine removes its containers' mounts
        _wait_agent(client, lay, time.monotonic() + AGENT_READY_S)
        for cid in _containers(client, lay, running_only=False):
            say(f"removing container {cid[:12]}")
            _engine(client, lay, "DELETE", f"/containers/{cid}?force=1&v=1")
        _exec(client, remote_install.uninstall(lay, supervisor, "pymachine0", "pymachine"))
    finally:
        client.close()


def running(name: str) -> bool:
    lay, supervisor = layout(name)
    status, _, _ = ssh.run(name, remote_install.running(lay, supervisor), timeout=30)
    return status == 0


def stop_agent(name: str) -> None:
    lay, supervisor = layout(name)
    ssh.run(name, remote_install.stop(lay, supervisor), timeout=60)


def _containers(client: paramiko.SSHClient, lay: remote_install.Layout, running_only: bool) -> list[str]:
    found = _engine(client, lay, "GET", "/containers/json" + ("" if running_only else "?all=1"))
    return [str(c["Id"]) for c in found or []]


def _engine(client: paramiko.SSHClient, lay: remote_install.Layout, method: str, path: str) -> Any:
    from .hostagent import guestapi
    from .hostagent.streamlocal import Opener

    transport = client.get_transport()
    assert transport is not None
    status, body = guestapi.request(Opener(lay.socket, "auto").open(transport), method, path)
    if status >= 400 and status != 404:
        raise PymachineError(f"the engine on the host answered {method} {path} with {status}: {body}")
    return body
