"""Re-provision the guest agent when its sources differ from this host's copy (DESIGN: host and guest never
drift apart across upgrades). The host ships `pymachine_agent` as data; the guest runs it from
/opt/pymachine/agent under the init's respawn loop, so replacing the folder and ending the process is enough.
Containers outlive the agent (each has its own supervisor), so this does not stop them.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import paramiko

AGENT_DIR = "/opt/pymachine/agent"

# Unpack next to the live copy, swap by rename, then end the running agent: the init starts the new one.
# `[t]` keeps pkill from matching this very shell command line.
_INSTALL = (
    "set -e; d={d}; rm -rf $d/.new $d/.old; mkdir -p $d/.new; tar -xzf - -C $d/.new; "
    "if [ -d $d/pymachine_agent ]; then mv $d/pymachine_agent $d/.old; fi; "
    "mv $d/.new/pymachine_agent $d/pymachine_agent; rm -rf $d/.new $d/.old; "
    "pkill -f 'pymachine_agen[t] serve' || true"
)


def enabled() -> bool:
    """Whether to replace a drifted guest agent. `PYMACHINE_AGENT_REPROVISION=1|0` decides; by default only
    installed copies do it. In a source checkout the agent's files change under running machines all day,
    and pushing half-edited code into every VM (other people's test VMs included) would do harm."""
    explicit = os.environ.get("PYMACHINE_AGENT_REPROVISION")
    if explicit is not None:
        return explicit not in ("0", "", "no", "false")
    try:
        from pymachine_agent import protocol
    except ImportError:
        return False
    root = Path(protocol.__file__).resolve().parent
    return not any((parent / ".git").exists() for parent in root.parents)


def local_checksum() -> str | None:
    try:
        from pymachine_agent import protocol
    except ImportError:
        return None
    return protocol.source_checksum()


def agent_archive() -> bytes:
    """A gzip tar of the host's agent sources (the files `source_checksum` covers), under pymachine_agent/."""
    from pymachine_agent import protocol

    root = Path(protocol.__file__).resolve().parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in protocol.source_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo("pymachine_agent/" + path.relative_to(root).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def install(transport: paramiko.Transport, timeout: float = 60.0) -> None:
    """Copy the sources in and restart the guest agent; raises OSError when the guest refuses."""
    data = agent_archive()
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(f"sh -c {_quote(_INSTALL.format(d=AGENT_DIR))}")
        chan.sendall(data)
        chan.shutdown_write()
        err = b""
        while chunk := chan.recv_stderr(65536):
            err += chunk
        status = chan.recv_exit_status()
    finally:
        chan.close()
    if status != 0:
        raise OSError(f"installing the guest agent failed ({status}): {err.decode(errors='replace')[-300:]}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
