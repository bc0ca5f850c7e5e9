"""A hostile ~/.ssh/config for tests of `pymachine ssh`, and a way to make the real OpenSSH client read it.

OpenSSH finds ~/.ssh/config through the passwd entry's home, not $HOME, so a temp HOME proves nothing: the
command runs in a private mount namespace (root only) where an overlay puts the hostile .ssh over that home
(the rest of the home, a pyenv Python for one, stays visible). Nothing outside the namespace sees it."""

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
    """An overlay layer (upper/ and work/ under the returned folder) whose .ssh/config forwards the agent and
    X, opens forwards and runs a ProxyCommand."""
    layer = folder / "hostile-home"
    (layer / "upper" / ".ssh").mkdir(parents=True)
    (layer / "work").mkdir()
    home = pwd.getpwuid(os.geteuid()).pw_dir
    config = HOSTILE.format(port=port, socks_port=socks_port, marker=folder / "local-command-ran", home=home)
    (layer / "upper" / ".ssh" / "config").write_text(config)
    return layer


def with_home(layer: Path, argv: list[str]) -> list[str]:
    """`argv` run with `layer` laid over the current user's passwd home, in a private mount namespace."""
    home = pwd.getpwuid(os.geteuid()).pw_dir
    mount = 'mount -t overlay overlay -o "lowerdir=$2,upperdir=$1/upper,workdir=$1/work" "$2"'
    script = f'{mount} && shift 2 && exec "$@"'
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "sh", "-c", script, "sh", str(layer), home, *argv]
