"""docker's output and exit-code conventions, as pure functions: `--format` (table, json as JSON lines, a Go
template subset), `-q`, `ps --filter`, `logs --since`, and the 125/126/127 codes of `run`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pymachine.hostvm.errors import UsageError

Columns = list[tuple[str, str]]  # (header, field)

# -- Go templates (the subset people paste from docker's docs) --------------------------------------------
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
_FUNCS: dict[str, Callable[[Any], str]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "upper": lambda v: _text(v).upper(),
    "lower": lambda v: _text(v).lower(),
    "title": lambda v: _text(v).title(),
    "len": lambda v: str(len(v)),
    "print": lambda v: _text(v),
    "println": lambda v: _text(v) + "\n",
}


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _lookup(row: Any, path: str) -> Any:
    """`.` → the row; `.A.B` → row["A"]["B"] (a missing key is Go's `<no value>`)."""
    value = row
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise UsageError(
                f"template: can't evaluate field {part}",
                hint="fields: " + ", ".join(sorted(row)) if isinstance(row, dict) else "",
            )
    return value


def _evaluate(action: str, row: Any) -> str:
    words = action.split()
    if not words:
        return ""
    if len(words) == 1 and words[0].startswith("."):
        return _text(_lookup(row, words[0]))
    if len(words) == 2 and words[0] in _FUNCS and words[1].startswith("."):
        return _FUNCS[words[0]](_lookup(row, words[1]))
    if len(words) == 3 and words[1] == "|" and words[2] in _FUNCS and words[0].startswith("."):
        return _FUNCS[words[2]](_lookup(row, words[0]))
    raise UsageError(
        f"template: unsupported action {{{{{action}}}}}",
        hint="supported: {{.Field}}, {{.A.B}}, {{json .}}, {{json .Field}}, {{upper|lower|title .Field}}",
    )


def render_template(template: str, row: Any) -> str:
    out, pos = [], 0
    for m in _ACTION.finditer(template):
        out.append(template[pos : m.start()])
        out.append(_evaluate(m.group(1), row))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


def _unescape(fmt: str) -> str:
    # What people type in a shell: a literal backslash-t is a tab, as in docker's formatter.
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def _align(lines: list[list[str]]) -> list[str]:
    """docker's tabwriter: columns padded to the widest cell plus three spaces."""
    widths: dict[int, int] = {}
    for cells in lines:
        for i, cell in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return ["".join(c.ljust(widths[i] + 3) for i, c in enumerate(cells[:-1])) + cells[-1] for cells in lines]


def table(rows: list[dict[str, Any]], columns: Columns) -> str:
    lines = [[h for h, _ in columns]] + [[_text(r.get(k, "")) for _, k in columns] for r in rows]
    return "\n".join(line.rstrip() for line in _align(lines))


def format_rows(rows: list[dict[str, Any]], columns: Columns, fmt: str | None) -> str:
    """`--format`: table (default), json (one JSON object per line, as docker 23+), `table TEMPLATE`
    (a header from the column names, aligned), or a TEMPLATE per row."""
    if not fmt or fmt == "table":
        return table(rows, columns)
    if fmt == "json":
        return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
    fmt = _unescape(fmt)
    if fmt.startswith("table"):
        template = fmt[len("table") :].strip()
        headers = {field: header for header, field in columns}
        head = _ACTION.sub(lambda m: _header(m.group(1), headers), template)
        lines = [head.split("\t")] + [render_template(template, r).split("\t") for r in rows]
        return "\n".join(line.rstrip() for line in _align(lines))
    return "\n".join(render_template(fmt, r) for r in rows)


def _header(action: str, headers: dict[str, str]) -> str:
    field = action.split()[-1].lstrip(".")
    return headers.get(field, field.upper())


# -- ps --filter --------------------------------------------------------------------------------------------
FILTER_KEYS = ("id", "name", "status", "label", "ancestor", "exited")


def parse_filters(specs: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq or key not in FILTER_KEYS:
            raise UsageError(
                f"invalid filter '{spec}'", hint=f"KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}"
            )
        out.setdefault(key, []).append(value)
    return out


def matches(attrs: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """docker's rules: values of one key are alternatives (OR), different keys must all hold (AND)."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    name = str(attrs.get("Name") or "").lstrip("/")
    tests: dict[str, Callable[[str], bool]] = {
        "id": lambda v: str(attrs.get("Id", "")).startswith(v),
        "name": lambda v: re.search(v, name) is not None,
        "status": lambda v: state.get("Status") == v,
        "label": lambda v: (
            (v.partition("=")[0] in labels)
            and (not v.partition("=")[1] or labels.get(v.partition("=")[0]) == v.partition("=")[2])
        ),
        "ancestor": lambda v: _same_image(v, str(config.get("Image") or ""), str(attrs.get("Image") or "")),
        "exited": lambda v: state.get("Status") == "exited" and str(state.get("ExitCode")) == v,
    }
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


def _same_image(wanted: str, name: str, image_id: str) -> bool:
    def norm(ref: str) -> str:
        return ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"

    return norm(wanted) == norm(name) or image_id.removeprefix("sha256:").startswith(
        wanted.removeprefix("sha256:")
    )


# -- logs --since -------------------------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime | float:
    """docker's `--since`/`--until`: a Go duration (`10m`, `1h30m`, relative to now), a unix timestamp, or an
    RFC 3339 date (`2026-12-05T10:00:00Z`, `2026-12-05`)."""
    now = now or dt.datetime.now(dt.UTC)
    if re.fullmatch(r"(\d+(?:\.\d+)?(h|m|s|ms))+", text):
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * scale[u] for n, u in _DURATION.findall(text))
        return now - dt.timedelta(seconds=seconds)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"invalid value for --since: '{text}'", hint="a duration (10m, 1h30m), a timestamp or a date"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# -- exit codes ---------------------------------------------------------------------------------------------
def run_exit_code(message: str) -> int:
    """The status of `docker run` when the engine refused to create or start the container: 127 when the
    command does not exist, 126 when it cannot be run, 125 for any other failure of docker/the engine itself
    (cli/command/container/run.go)."""
    if any(s in message for s in ("executable file not found", "no such file or directory")):
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 125
