"""Compiled code for the methods that @dataclass writes, made once at image build time (issue 14, cold boot).

`@dataclass` writes each class's `__init__`, `__repr__`, `__eq__`, … as source text and compiles it with
`exec` while the module imports: ~180 compilations for the ~40 dataclasses the agent imports before it serves,
0.5 s of its 2.9 s of imports measured in a TCG guest (the compiler is emulated instruction by instruction).
The texts are the same at every start, so the image build imports the agent once with a recording `exec`
(`python3 -m pymachine_agent.codecache FILE`) and keeps each text's code object (marshal, tagged with the
interpreter's version); at start, `install(FILE)` gives the `dataclasses` module an `exec` of its own — a
module global, which its `exec(txt, globals, ns)` call finds before the builtin — that runs the stored code
object of a known text and compiles any other text as before. Same text, same compile flags (none inherited:
`dont_inherit`), so the same code objects; a stale or missing file only means compiling as usual.

No `from __future__ import annotations` here: a text compiled here must not inherit this module's flags.
"""

import builtins
import marshal
import os
import sys

FILE_NAME = "dataclass-code.marshal"  # next to the agent package's own __pycache__ files


def default_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__", FILE_NAME)


def _tag() -> str:
    return f"{sys.implementation.cache_tag} {sys.version}"  # code objects are only good for this interpreter


def _compile(text: str):  # type: ignore[no-untyped-def]
    return compile(text, "<string>", "exec", dont_inherit=True)  # what dataclasses' own exec(str) compiles


class Stats:
    """How many texts came from the file and how many were compiled (the agent's startup note shows them)."""

    hits = 0
    misses = 0


def install(path=None) -> bool:  # noqa: ANN001 - no PEP 604 at run time here (see above)
    """Serve dataclasses' compilations from the file at `path`; False (and nothing changed) when it is
    missing, damaged or made by another interpreter."""
    try:
        with open(path or default_path(), "rb") as fh:
            tag, table = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if tag != _tag() or not isinstance(table, dict):
        return False
    import dataclasses

    def cached_exec(source, globals=None, locals=None, /):  # type: ignore[no-untyped-def]
        code = table.get(source) if isinstance(source, str) else None
        if code is None:
            Stats.misses += 1
            code = _compile(source) if isinstance(source, str) else source
        else:
            Stats.hits += 1
        return builtins.exec(code, globals, locals)

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]
    return True


def uninstall() -> None:
    import dataclasses

    vars(dataclasses).pop("exec", None)


def record(modules: list[str]) -> dict:
    """Import `modules` (those that fail to import here are skipped) and return {text: code} of every
    compilation dataclasses asked for meanwhile."""
    import dataclasses
    import importlib

    table: dict = {}

    def recording_exec(source, globals=None, locals=None, /):  # type: ignore[no-untyped-def]
        if isinstance(source, str):
            code = table[source] = _compile(source)
            return builtins.exec(code, globals, locals)
        return builtins.exec(source, globals, locals)

    dataclasses.exec = recording_exec  # type: ignore[attr-defined]
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - a module that needs the running guest: not cached
                print(f"codecache: {name} not imported here: {exc}", file=sys.stderr)
    finally:
        uninstall()
    return table


def agent_modules() -> list[str]:
    """Every module of the agent package, by file (what the image ships)."""
    root = os.path.dirname(os.path.abspath(__file__))
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, os.path.dirname(root)).replace(os.sep, ".")
        for name in sorted(files):
            if name.endswith(".py") and name != "__main__.py":
                found.append(rel if name == "__init__.py" else f"{rel}.{name[:-3]}")
    return found


def write(path: str, table: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        marshal.dump((_tag(), table), fh)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    path = argv[0] if argv else default_path()
    table = record(agent_modules())
    write(path, table)
    print(f"codecache: {len(table)} dataclass method texts compiled into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
