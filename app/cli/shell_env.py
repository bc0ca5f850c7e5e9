"""`pymachine docker-env`: the lines that point (or, with --unset, stop pointing) a shell's `docker` at a
machine, in the syntax of bash/zsh/sh, fish, PowerShell or cmd, as docker-machine's `env` prints them."""

from __future__ import annotations

import os
import shlex
import sys

BACKSLASH, QUOTE = "\\", "'"
SHELLS = ("bash", "zsh", "sh", "fish", "powershell", "cmd")


def detect(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str:
    env = os.environ if environ is None else environ
    if platform == "win32":
        return "powershell" if env.get("PSModulePath") else "cmd"
    name = os.path.basename(env.get("SHELL", ""))
    return name if name in SHELLS else "bash"


def _self(shell: str, machine: str, unset: bool) -> str:
    flags = (["--unset"] if unset else []) + ([] if shell in ("bash", "zsh", "sh") else ["--shell", shell])
    return " ".join(["pymachine", "docker-env", *flags, machine])


def render(shell: str, docker_host: str, machine: str, unset: bool = False) -> str:
    """The shell lines, with the comment that says how to apply them."""
    me = _self(shell, machine, unset)
    if shell == "fish":
        line = "set -e DOCKER_HOST;" if unset else f"set -gx DOCKER_HOST {_single(docker_host, BACKSLASH)};"
        return f"{line}\n# Run this command to configure your shell:\n# {me} | source"
    if shell == "powershell":
        line = (
            "Remove-Item Env:\\DOCKER_HOST" if unset else f"$Env:DOCKER_HOST = {_single(docker_host, QUOTE)}"
        )
        return f"{line}\n# Run this command to configure your shell:\n# & {me} | Invoke-Expression"
    if shell == "cmd":
        line = "SET DOCKER_HOST=" if unset else f"SET DOCKER_HOST={docker_host}"
        return (
            f"{line}\nREM Run this command to configure your shell:\n"
            f"REM @FOR /f \"tokens=*\" %i IN ('{me}') DO @%i"
        )
    line = "unset DOCKER_HOST" if unset else f"export DOCKER_HOST={shlex.quote(docker_host)}"
    context = "" if unset else f"\n# the docker CLI context 'pymachine-{machine}' points at the same socket"
    return f"{line}{context}\n# Run this command to configure your shell:\n# eval $({me})"


def _single(text: str, escape: str) -> str:
    """Single-quoted for fish (escape with a backslash) or PowerShell (double the quote)."""
    return "'" + text.replace("'", escape + "'") + "'"
