"""`docker commit --change 'CMD ["x"]'`: the Dockerfile instructions Docker allows there, applied to an image
config's "config" section (pure; moby's `BuildFromConfig` accepts the same list)."""

from __future__ import annotations

import copy
import json
import posixpath
import shlex
from typing import Any

from ..errors import BadChange

ALLOWED = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


def _json_or_shell(arg: str, shell: bool) -> list[str]:
    text = arg.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text] if shell else shlex.split(text)


def _pairs(arg: str, what: str) -> list[tuple[str, str]]:
    words = shlex.split(arg)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV key value with spaces`
        return [(words[0], arg.strip().split(None, 1)[1])]
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise BadChange(f"{what} needs key=value pairs, got {w!r}")
        out.append((key, value))
    return out


def apply(config: dict[str, Any], instructions: list[str]) -> dict[str, Any]:
    """A copy of `config` (the image config's "config" section) with each instruction applied in order."""
    cfg = copy.deepcopy(config)
    for line in instructions:
        line = line.strip()
        if not line:
            continue
        word, _, arg = line.partition(" ")
        cmd = word.upper()
        if cmd not in ALLOWED:
            raise BadChange(f"{word} is not a valid change command (allowed: {', '.join(ALLOWED)})")
        if cmd in ("CMD", "ENTRYPOINT"):
            cfg["Cmd" if cmd == "CMD" else "Entrypoint"] = _json_or_shell(arg, shell=True)
        elif cmd == "ENV":
            env = list(cfg.get("Env") or [])
            for key, value in _pairs(arg, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            cfg["Env"] = env
        elif cmd == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(arg, "LABEL"))
            cfg["Labels"] = labels
        elif cmd == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in arg.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif cmd == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            for v in _json_or_shell(arg, shell=False):
                vols[v] = {}
            cfg["Volumes"] = vols
        elif cmd == "WORKDIR":
            cfg["WorkingDir"] = posixpath.join(cfg.get("WorkingDir") or "/", arg.strip())
        elif cmd == "USER":
            cfg["User"] = arg.strip()
        elif cmd == "STOPSIGNAL":
            cfg["StopSignal"] = arg.strip()
        elif cmd == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), arg.strip()]
    return cfg
