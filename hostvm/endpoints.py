"""Where a machine's engine is served on the host, per platform, as docker and docker-py spell it.

Linux and macOS: a unix socket in the machine's folder (`unix:///…/m/NAME/docker.sock`). Windows: a named pipe
(`npipe:////./pipe/pymachine-NAME`), which the docker CLI and docker-py speak there and which Docker Desktop
uses too. Pure functions, so that every platform's answer is unit-tested here on Linux; the host agent serving
a named pipe on Windows is not written yet (docs/packaging.md lists it as not verified).
"""

from __future__ import annotations

import sys

from . import paths

PIPE_PREFIX = "pymachine-"


def pipe_path(name: str) -> str:
    r"""The Windows named pipe of machine `name`: \\.\pipe\pymachine-NAME."""
    return rf"\\.\pipe\{PIPE_PREFIX}{name}"


def engine_address(name: str, platform: str = sys.platform) -> str:
    """The DOCKER_HOST of machine `name` on `platform` (what the docker context and docker-py are given)."""
    if platform == "win32":
        return f"npipe:////./pipe/{PIPE_PREFIX}{name}"
    return f"unix://{paths.machine(name).docker_socket}"
