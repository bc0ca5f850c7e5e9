"""A hostile ~/.ssh/config for tests of `pymachine ssh`, and a way to make the real OpenSSH client read it.

OpenSSH finds ~/.ssh/config through the passwd entry's home, not $HOME, so a temp HOME proves nothing: the
command runs in a private mount namespace (root only) where a temp folder is bind-mounted over that home.
Nothing outside the namespace sees the hostile file."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

HOSTILE = """\
Host *
  ForwardAgent yes
  ForwardX11 yes
  LocalForward 127.0.0.1:{port} 127.0.0.1:22
  DynamicForward 127.0.0.1:{socks_port}
  ProxyCommand false
  PermitLocalCommand yes
  LocalCommand touch {marker}
  ControlMaster auto
  ControlPath {home}/cm-%r@%h:%p
  UserKnownHostsFile {home}/known
  StrictHostKeyChecking no
  IdentityAgent {home}/agent.sock
  IdentityFile {home}/id_user
"""


def hostile_home(folder: Path, port: int, socks_port: int) -> Path:
    """A home folder whose .ssh/config forwards the agent and X, opens forwards and runs a ProxyCommand."""
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True)
    config = HOSTILE.format(port=port, socks_port=socks_port, marker=folder / "local-command-ran", home=home)
    (home / ".ssh" / "config").write_text(config)
    return home


def with_home(home: Path, argv: list[str]) -> list[str]:
    """`argv` run with `home` mounted over the current user's passwd home, in a private mount namespace."""
    real = pwd.getpwuid(os.geteuid()).pw_dir
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "sh", "-c", script, "sh", str(home), real, *argv]
