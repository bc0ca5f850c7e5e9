"""Dockerfile parser: text in, stages of instructions out. Pure: no I/O, no variable values.

Follows the Docker builder's parser: parser directives at the top (`# escape=` honoured, `# syntax=` and
`# check=` ignored), line continuations with the escape character, comment lines (also inside continuations),
JSON (exec) form vs shell form, `--flag=value` options, ARG before the first FROM. Variable substitution
happens at build time (values depend on ENV/ARG state), see `shellwords.substitute`. Every error names the
line number and the instruction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .shellwords import split_words

# The value is taken whole and stripped afterwards: a lazy `(.+?)[ \t]*$` is quadratic on a long blank run.
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=(.*)$")
_KNOWN_DIRECTIVES = ("escape", "syntax", "check")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}

# Flags each instruction accepts (value None = boolean flag allowed). RUN --mount and friends need BuildKit.
_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "COPY": ("from", "chown", "chmod", "link"),
    "ADD": ("chown", "chmod", "checksum", "link"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}
_BUILDKIT_ONLY_FLAGS = {
    "RUN": ("mount", "network", "security"),
    "COPY": ("parents", "exclude"),
    "ADD": ("exclude",),
}
INSTRUCTIONS = (
    "FROM", "RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "ENV", "ARG", "LABEL", "WORKDIR", "USER", "EXPOSE",
    "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER",
)  # fmt: skip


class DockerfileError(ValueError):
    """A malformed Dockerfile: which line, which instruction, what is wrong."""

    def __init__(self, line: int, instruction: str, detail: str) -> None:
        self.line = line
        self.instruction = instruction
        self.detail = detail
        where = f"line {line}" if line else "the Dockerfile"
        super().__init__(f"Dockerfile parse error on {where}: {instruction}: {detail}")


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]  # ("NONE",) | ("CMD", argv...) | ("CMD-SHELL", command)
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0


@dataclass
class Instruction:
    cmd: str  # upper-case keyword
    line: int  # 1-based line where the instruction starts
    original: str  # as written, continuations joined: what `Step n/m : ...` shows
    args: list[str] = field(default_factory=list)  # words, or the argv of the exec form, or [shell string]
    json: bool = False  # exec (JSON) form
    flags: dict[str, str] = field(default_factory=dict)
    pairs: list[tuple[str, str | None]] = field(default_factory=list)  # ENV/LABEL/ARG (ARG value may be None)
    health: HealthCheck | None = None
    sub: Instruction | None = None  # ONBUILD's trigger
    sub_text: str = ""  # ONBUILD's trigger as written (stored in the image config)


@dataclass
class Stage:
    index: int
    base: str  # unexpanded image reference (may hold $ARGs), "scratch" or an earlier stage's name
    name: str | None
    platform: str | None
    from_instr: Instruction
    commands: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str
    meta_args: list[Instruction]  # ARGs before the first FROM
    stages: list[Stage]

    def stage_index(self, name_or_index: str) -> int:
        """Resolve a `--target` / `--from` stage name (case-insensitive) or number."""
        key = name_or_index.lower()
        for stage in self.stages:
            if stage.name == key:
                return stage.index
        if key.isdigit() and int(key) < len(self.stages):
            return int(key)
        raise KeyError(name_or_index)


def _logical_lines(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Join continuations, drop comments and blanks; returns (escape char, [(first line number, text)])."""
    escape = "\\"
    seen: set[str] = set()
    directives_done = False
    raw = text.removeprefix("\ufeff").splitlines()
    result: list[tuple[int, str]] = []
    i = 0
    while i < len(raw):
        lineno = i + 1
        line = raw[i].rstrip("\r\n")
        i += 1
        if not directives_done:
            match = _DIRECTIVE.match(line)
            name = match.group(1).lower() if match and match.group(2).strip(" \t") else ""
            if name in _KNOWN_DIRECTIVES:
                if name in seen:
                    raise DockerfileError(lineno, "#" + name, f"only one {name} parser directive can be used")
                seen.add(name)
                if name == "escape":
                    value = match.group(2).strip(" \t")  # type: ignore[union-attr]
                    if value not in ("\\", "`"):
                        raise DockerfileError(
                            lineno, "#escape", f"invalid escape token '{value}' does not match ` or \\"
                        )
                    escape = value
                continue
            directives_done = True
        stripped = line.lstrip(" \t")
        if stripped.startswith("#") or not stripped.strip():
            continue
        first, more = _trim_continuation(stripped, escape)
        pieces = [first]  # joined once at the end: `+=` in the loop copies the growing line each time
        while more and i < len(raw):
            piece = raw[i].rstrip("\r\n")
            i += 1
            if piece.lstrip(" \t").startswith("#"):
                continue  # comments inside a continued instruction are dropped
            if not piece.strip():
                continue  # Docker warns about empty continuation lines but accepts them
            piece, more = _trim_continuation(piece, escape)
            pieces.append(piece)
        joined = "".join(pieces)
        if joined.strip():
            result.append((lineno, joined))
    return escape, result


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Drop a trailing escape character (and the blanks after it): the line continues."""
    body = line.rstrip(" \t")
    if body.endswith(escape):
        return body[:-1], True
    return line, False


def _parse_flags(cmd: str, line: int, rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, *tail = rest.split(None, 1)
        remainder = tail[0] if tail else ""
        if word == "--":
            rest = remainder.lstrip()
            break
        name, eq, value = word[2:].partition("=")
        name = name.lower()
        if name in _BUILDKIT_ONLY_FLAGS.get(cmd, ()):
            raise DockerfileError(
                line,
                cmd,
                f"the --{name} option requires BuildKit, which pymachine's builder does not implement",
            )
        if name not in _FLAGS.get(cmd, ()):
            raise DockerfileError(line, cmd, f"unknown flag: --{name}")
        if name in flags:
            raise DockerfileError(line, cmd, f"duplicate flag specified: --{name}")
        flags[name] = value if eq else "true"
        rest = remainder
    return flags, rest


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    """Exec form when the text is a JSON array of strings, else the shell form as one string."""
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # `[[[[…` nested past the decoder's depth is not an argv either
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value, True
    return ([text] if text else []), False


def _name_values(
    cmd: str, line: int, rest: str, escape: str, allow_bare: bool
) -> list[tuple[str, str | None]]:
    words = split_words(rest, escape)
    if not words:
        raise DockerfileError(line, cmd, f"{cmd} requires at least one argument")
    if not allow_bare and "=" not in words[0]:
        # legacy form `ENV NAME value with spaces`
        parts = re.split(r"[ \t]+", rest.strip(), maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(line, cmd, f"{cmd} must have two arguments")
        return [(parts[0], parts[1])]
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, eq, value = word.partition("=")
        if not eq and not allow_bare:
            raise DockerfileError(
                line, cmd, f"syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        if not name:
            raise DockerfileError(line, cmd, f"{cmd} names can not be blank")
        pairs.append((name, value if eq else None))
    return pairs


def parse_duration(text: str) -> int:
    """A Go duration ("30s", "1m30s", "250ms") in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_NS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"time: invalid duration {text!r}")
    return int(total)


def _healthcheck(line: int, flags: dict[str, str], rest: str) -> HealthCheck:
    words = rest.split(None, 1)
    if not words:
        raise DockerfileError(line, "HEALTHCHECK", "HEALTHCHECK requires an argument (NONE or CMD ...)")
    kind = words[0].upper()
    if kind == "NONE":
        if len(words) > 1 or flags:
            raise DockerfileError(line, "HEALTHCHECK", "HEALTHCHECK NONE takes no arguments")
        return HealthCheck(test=("NONE",))
    if kind != "CMD":
        raise DockerfileError(line, "HEALTHCHECK", f"unknown type {words[0]!r} in HEALTHCHECK (try CMD)")
    cmd, is_json = _maybe_json(words[1] if len(words) > 1 else "")
    if not cmd:
        raise DockerfileError(line, "HEALTHCHECK", "missing command after HEALTHCHECK CMD")
    test = ("CMD", *cmd) if is_json else ("CMD-SHELL", cmd[0])
    durations: dict[str, int] = {}
    for flag in ("interval", "timeout", "start-period", "start-interval"):
        try:
            value = parse_duration(flags.get(flag, "0"))
        except ValueError as exc:
            raise DockerfileError(line, "HEALTHCHECK", f"--{flag}: {exc}") from None
        if 0 < value < 10**6:
            raise DockerfileError(line, "HEALTHCHECK", f"--{flag} cannot be less than 1ms")
        durations[flag] = value
    try:
        retries = int(flags.get("retries", "0"))
    except ValueError:
        raise DockerfileError(
            line, "HEALTHCHECK", f"--retries must be an integer, got {flags['retries']!r}"
        ) from None
    if retries < 0:
        raise DockerfileError(line, "HEALTHCHECK", "--retries cannot be negative")
    return HealthCheck(
        test,
        durations["interval"],
        durations["timeout"],
        durations["start-period"],
        durations["start-interval"],
        retries,
    )


def parse_instruction(lineno: int, text: str, escape: str = "\\") -> Instruction:
    """One logical line (continuations already joined) → an Instruction."""
    parts = text.strip().split(None, 1)
    keyword = parts[0]
    cmd = keyword.upper()
    rest = parts[1].strip() if len(parts) > 1 else ""
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(lineno, keyword, f"unknown instruction: {keyword}")
    ins = Instruction(cmd=cmd, line=lineno, original=text.strip())
    ins.flags, rest = _parse_flags(cmd, lineno, rest)
    if rest.startswith("<<") and cmd in ("RUN", "COPY", "ADD"):
        raise DockerfileError(
            lineno, cmd, "heredocs (<<EOF) need BuildKit; write the commands or files out instead"
        )
    if cmd == "FROM":
        ins.args = rest.split()
        if len(ins.args) not in (1, 3) or (len(ins.args) == 3 and ins.args[1].lower() != "as"):
            raise DockerfileError(
                lineno, cmd, "FROM requires either one argument, or three: FROM <image> AS <name>"
            )
    elif cmd in ("RUN", "CMD", "ENTRYPOINT"):
        ins.args, ins.json = _maybe_json(rest)
        if cmd == "RUN" and not ins.args:
            raise DockerfileError(lineno, cmd, "RUN requires at least one argument")
    elif cmd == "SHELL":
        ins.args, ins.json = _maybe_json(rest)
        if not ins.json or not ins.args:
            raise DockerfileError(
                lineno, cmd, 'SHELL requires the arguments to be in JSON form, e.g. ["/bin/sh", "-c"]'
            )
    elif cmd in ("COPY", "ADD"):
        ins.args, ins.json = _maybe_json(rest)
        if not ins.json:
            ins.args = split_words(rest, escape)
        if len(ins.args) < 2:
            raise DockerfileError(
                lineno,
                cmd,
                f"{cmd} requires at least two arguments (sources and a destination), got {len(ins.args)}",
            )
    elif cmd in ("ENV", "LABEL"):
        ins.pairs = _name_values(cmd, lineno, rest, escape, allow_bare=False)
    elif cmd == "ARG":
        ins.pairs = _name_values(cmd, lineno, rest, escape, allow_bare=True)
    elif cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if not rest:
            raise DockerfileError(lineno, cmd, f"{cmd} requires exactly one argument")
        if cmd == "STOPSIGNAL" and len(rest.split()) != 1:
            raise DockerfileError(lineno, cmd, "STOPSIGNAL requires exactly one argument")
        ins.args = [rest]
    elif cmd == "EXPOSE":
        ins.args = rest.split()
        if not ins.args:
            raise DockerfileError(lineno, cmd, "EXPOSE requires at least one argument")
    elif cmd == "VOLUME":
        ins.args, ins.json = _maybe_json(rest)
        if not ins.json:
            ins.args = rest.split()
        if not ins.args or any(not a.strip() for a in ins.args):
            raise DockerfileError(lineno, cmd, "VOLUME specified can not be an empty string")
    elif cmd == "HEALTHCHECK":
        ins.health = _healthcheck(lineno, ins.flags, rest)
    elif cmd == "ONBUILD":
        if not rest:
            raise DockerfileError(lineno, cmd, "ONBUILD requires at least one argument")
        trigger = rest.split(None, 1)[0].upper()
        if trigger in ("ONBUILD", "FROM", "MAINTAINER"):
            raise DockerfileError(lineno, cmd, f"{trigger} isn't allowed as an ONBUILD trigger")
        ins.sub = parse_instruction(lineno, rest, escape)
        ins.sub_text = rest
    return ins


def parse(text: str) -> Dockerfile:
    """Parse a whole Dockerfile into global ARGs and stages; raises DockerfileError."""
    escape, lines = _logical_lines(text)
    meta_args: list[Instruction] = []
    stages: list[Stage] = []
    for lineno, line in lines:
        ins = parse_instruction(lineno, line, escape)
        if ins.cmd == "FROM":
            name = None
            if len(ins.args) == 3:
                name = ins.args[2].lower()
                if not _STAGE_NAME.match(name):
                    raise DockerfileError(lineno, "FROM", f"invalid name for build stage: {ins.args[2]!r}")
                if any(s.name == name for s in stages):
                    raise DockerfileError(lineno, "FROM", f"duplicate name {ins.args[2]!r} for build stage")
            stages.append(Stage(len(stages), ins.args[0], name, ins.flags.get("platform"), ins))
        elif not stages:
            if ins.cmd != "ARG":
                raise DockerfileError(
                    lineno,
                    ins.cmd,
                    "no build stage in current context: the first instruction must be FROM (or ARG)",
                )
            meta_args.append(ins)
        else:
            stages[-1].commands.append(ins)
    if not stages:
        raise DockerfileError(
            0, "FROM", "the Dockerfile has no FROM instruction (file with no instructions?)"
        )
    return Dockerfile(escape, meta_args, stages)
