"""What each config-only instruction does to the image config: pure functions, unit-tested.

Values are substituted here (ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL; not CMD/ENTRYPOINT/
HEALTHCHECK/SHELL, whose text the container's shell sees) with the stage's ARGs overlaid by its ENV.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import signal
from dataclasses import dataclass, field
from typing import Any

from .dockerfile import DockerfileError, Instruction
from .shellwords import SubstitutionError, substitute

DEFAULT_SHELL = ["/bin/sh", "-c"]
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$", re.I)


@dataclass
class StageState:
    """The stage being built: its current image, config, ARGs in scope and whether CMD was set in it."""

    image_id: str | None  # None: nothing yet (FROM scratch)
    config: dict[str, Any]  # the image config's "config" object (Env, Cmd, Entrypoint, ...)
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False
    author: str = ""

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def scope(self) -> dict[str, str]:
        """What `$VAR` sees: ARGs, with ENV winning over an ARG of the same name."""
        return {**self.args, **self.env()}

    def run_env(self) -> list[str]:
        """The environment of a RUN: the image's ENV plus ARG values ENV does not override."""
        env = self.env()
        return list(self.config.get("Env") or []) + [f"{k}={v}" for k, v in self.args.items() if k not in env]


def sub(ins: Instruction, text: str, scope: dict[str, str], escape: str) -> str:
    try:
        return substitute(text, scope, escape)
    except SubstitutionError as exc:
        raise DockerfileError(ins.line, ins.cmd, str(exc)) from None


def set_env(env_list: list[str], key: str, value: str) -> list[str]:
    out = [e for e in env_list if e.partition("=")[0] != key]
    # keep the original position when overriding, as Docker does
    for i, e in enumerate(env_list):
        if e.partition("=")[0] == key:
            out.insert(i, f"{key}={value}")
            return out
    return [*out, f"{key}={value}"]


def _ports(ins: Instruction, words: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for word in words:
        match = _PORT.match(word)
        if not match:
            raise DockerfileError(ins.line, ins.cmd, f"invalid containerPort: {word}")
        start = int(match.group(1))
        end = int(match.group(2) or start)
        proto = (match.group(3) or "tcp").lower()
        if end < start or end > 65535:
            raise DockerfileError(ins.line, ins.cmd, f"invalid port range: {word}")
        for port in range(start, end + 1):
            out[f"{port}/{proto}"] = {}
    return out


def _valid_signal(value: str) -> bool:
    if value.isdigit():
        return 0 < int(value) < 65
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return hasattr(signal.Signals, name) or re.match(r"^SIGRTM(IN|AX)([+-]\d+)?$", name) is not None


def command(ins: Instruction, config: dict[str, Any]) -> list[str]:
    """RUN/CMD/ENTRYPOINT argv: the exec form as given, the shell form through the stage's SHELL."""
    if ins.json:
        return list(ins.args)
    shell = list(config.get("Shell") or DEFAULT_SHELL)
    return [*shell, ins.args[0]] if ins.args else []


def apply_config(ins: Instruction, state: StageState, escape: str) -> tuple[dict[str, Any], str]:
    """The config keys a config-only instruction changes, and its history text (the cache key's core)."""
    scope = state.scope()
    config = state.config
    cmd = ins.cmd
    if cmd == "ENV":
        env = list(config.get("Env") or [])
        shown = []
        for key, value in ins.pairs:
            k, v = sub(ins, key, scope, escape), sub(ins, value or "", scope, escape)
            env = set_env(env, k, v)
            shown.append(f"{k}={v}")
        return {"Env": env}, "ENV " + " ".join(shown)
    if cmd == "LABEL":
        labels = dict(config.get("Labels") or {})
        shown = []
        for key, value in ins.pairs:
            k, v = sub(ins, key, scope, escape), sub(ins, value or "", scope, escape)
            labels[k] = v
            shown.append(f"{k}={v}")
        return {"Labels": labels}, "LABEL " + " ".join(shown)
    if cmd == "WORKDIR":
        path = sub(ins, ins.args[0], scope, escape)
        path = posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/", path))
        return {"WorkingDir": path}, f"WORKDIR {path}"
    if cmd == "USER":
        user = sub(ins, ins.args[0], scope, escape)
        return {"User": user}, f"USER {user}"
    if cmd == "CMD":
        argv = command(ins, config)
        state.cmd_set = True
        return {"Cmd": argv}, "CMD " + json.dumps(argv)
    if cmd == "ENTRYPOINT":
        argv = command(ins, config)
        changes: dict[str, Any] = {"Entrypoint": argv}
        if not state.cmd_set:
            changes["Cmd"] = None  # a new ENTRYPOINT drops the base image's CMD (Docker's rule)
        return changes, "ENTRYPOINT " + json.dumps(argv)
    if cmd == "EXPOSE":
        words = [sub(ins, w, scope, escape) for w in ins.args]
        ports = dict(config.get("ExposedPorts") or {})
        ports.update(_ports(ins, words))
        return {"ExposedPorts": ports}, "EXPOSE " + " ".join(sorted(ports))
    if cmd == "VOLUME":
        paths = [sub(ins, w, scope, escape) for w in ins.args]
        if any(not p.strip() for p in paths):
            raise DockerfileError(ins.line, cmd, "VOLUME specified can not be an empty string")
        volumes = dict(config.get("Volumes") or {})
        volumes.update({p: {} for p in paths})
        return {"Volumes": volumes}, "VOLUME " + json.dumps(paths)
    if cmd == "SHELL":
        return {"Shell": list(ins.args)}, "SHELL " + json.dumps(ins.args)
    if cmd == "STOPSIGNAL":
        value = sub(ins, ins.args[0], scope, escape)
        if not _valid_signal(value):
            raise DockerfileError(ins.line, cmd, f"invalid signal: {value}")
        return {"StopSignal": value}, f"STOPSIGNAL {value}"
    if cmd == "HEALTHCHECK":
        hc = ins.health
        assert hc is not None
        check: dict[str, Any] = {"Test": list(hc.test)}
        for key, value in (
            ("Interval", hc.interval_ns),
            ("Timeout", hc.timeout_ns),
            ("StartPeriod", hc.start_period_ns),
            ("StartInterval", hc.start_interval_ns),
            ("Retries", hc.retries),
        ):
            if value:
                check[key] = value
        return {"Healthcheck": check}, "HEALTHCHECK " + json.dumps(check, sort_keys=True)
    if cmd == "ONBUILD":
        triggers = [*(config.get("OnBuild") or []), ins.sub_text]
        return {"OnBuild": triggers}, "ONBUILD " + ins.sub_text
    if cmd == "MAINTAINER":
        state.author = sub(ins, ins.args[0], scope, escape)
        return {}, f"MAINTAINER {state.author}"
    raise ValueError(f"{cmd} is not a config-only instruction")


def apply_arg(
    ins: Instruction,
    state: StageState,
    build_args: dict[str, str | None],
    globals_: dict[str, str],
    escape: str,
) -> str:
    """ARG: a --build-arg value wins, then the default (substituted), then a global ARG of that name."""
    shown = []
    for key, default in ins.pairs:
        if key in build_args and build_args[key] is not None:
            value: str | None = build_args[key]
        elif default is not None:
            value = sub(ins, default, state.scope(), escape)
        else:
            value = globals_.get(key)
        if value is not None:
            state.args[key] = value
        shown.append(key if value is None else f"{key}={value}")
    return "ARG " + " ".join(shown)


def base_config(image_config: dict[str, Any] | None) -> dict[str, Any]:
    """A working copy of a base image's config; ONBUILD triggers are consumed, not inherited."""
    cfg = copy.deepcopy((image_config or {}).get("config") or {})
    if cfg.get("OnBuild"):
        cfg["OnBuild"] = None  # explicit: the commit keeps the parent's keys unless overridden
    return cfg
