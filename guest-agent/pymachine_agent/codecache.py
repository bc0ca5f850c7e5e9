"""Compiled code for the methods that @dataclass writes and for the regular expressions that modules compile
at import, made once at image build time (issue 14, cold boot).

`@dataclass` writes each class's `__init__`, `__repr__`, `__eq__`, … as source text and compiles it with
`exec` while the module imports: ~180 compilations for the ~40 dataclasses the agent imports before it serves,
0.5 s of its 2.9 s of imports measured in a TCG guest (the compiler is emulated instruction by instruction).
The texts are the same at every start, so the image build imports the agent once with a recording `exec`
(`python3 -m pymachine_agent.codecache FILE`) and keeps each text's code object (marshal, tagged with the
interpreter's version); at start, `install(FILE)` gives the `dataclasses` module an `exec` of its own — a
module global, which its `exec(txt, globals, ns)` call finds before the builtin — that runs the stored code
object of a known text and compiles any other text as before. Same text, same compile flags (none inherited:
`dont_inherit`), so the same code objects; a stale or missing file only means compiling as usual.

Regular expressions the same way (~50 `re.compile` at import, 0.35 s of the same 2.9 s: `re`'s parser and
compiler are Python code; ~90 more for the API's routes when `serve` builds its router): the build keeps
what `re._compiler.compile` hands to `_sre.compile` for each (pattern, flags) — the opcode list, the group
count and names — and at start a known pattern goes straight to `_sre.compile` with them. That is `re`'s
internal interface of this interpreter (CPython 3.11), which the version tag pins: another interpreter finds
a foreign tag and compiles as usual.

No `from __future__ import annotations` here: a text compiled here must not inherit this module's flags.
"""

import builtins
import marshal
import os
import sys

FILE_NAME = "codecache.marshal"  # next to the agent package's own __pycache__ files


def default_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__", FILE_NAME)


def _tag() -> str:
    return f"{sys.implementation.cache_tag} {sys.version}"  # code objects are only good for this interpreter


def _compile(text: str):  # type: ignore[no-untyped-def]
    return compile(text, "<string>", "exec", dont_inherit=True)  # what dataclasses' own exec(str) compiles


class Stats:
    """How many texts and patterns came from the file and how many were compiled (the agent logs them)."""

    hits = 0
    misses = 0
    re_hits = 0
    re_misses = 0


def install(path=None) -> bool:  # noqa: ANN001 - no PEP 604 at run time here (see above)
    """Serve dataclasses' compilations and `re`'s from the file at `path`; False (and nothing changed) when
    it is missing, damaged or made by another interpreter."""
    try:
        with open(path or default_path(), "rb") as fh:
            tag, table, patterns = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if tag != _tag() or not isinstance(table, dict) or not isinstance(patterns, dict):
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
    if patterns:  # recorded only where re's internals are the ones _pattern_entry reads
        _install_patterns(patterns)
    return True


def _install_patterns(patterns: dict) -> None:
    import _sre
    import re._compiler

    original = re._compiler.compile

    def cached_compile(p, flags=0):  # type: ignore[no-untyped-def]
        entry = patterns.get((p, flags)) if isinstance(p, (str, bytes)) else None
        if entry is None:
            Stats.re_misses += 1
            return original(p, flags)
        Stats.re_hits += 1
        return _sre.compile(p, *entry)

    cached_compile.original = original  # type: ignore[attr-defined]
    re._compiler.compile = cached_compile


def _pattern_entry(p, flags):  # type: ignore[no-untyped-def]
    """What re._compiler.compile (3.11) passes to _sre.compile after the pattern: flags, opcodes, groups,
    groupindex, indexgroup."""
    import re._compiler
    import re._parser

    parsed = re._parser.parse(p, flags)
    code = re._compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    opcodes = [int(c) for c in code]  # named int constants among them: plain ints for marshal
    return (int(flags | parsed.state.flags), opcodes, parsed.state.groups - 1, groupindex, tuple(indexgroup))


def uninstall() -> None:
    import dataclasses
    import re._compiler

    vars(dataclasses).pop("exec", None)
    re._compiler.compile = getattr(re._compiler.compile, "original", re._compiler.compile)


def record(modules: list[str]) -> tuple[dict, dict]:
    """Import `modules` (those that fail to import here are skipped) and return {text: code} of every
    compilation dataclasses asked for meanwhile, and {(pattern, flags): what _sre.compile got} of every
    regular expression compiled."""
    import dataclasses
    import importlib
    import re._compiler

    table: dict = {}
    patterns: dict = {}
    original = re._compiler.compile

    def recording_compile(p, flags=0):  # type: ignore[no-untyped-def]
        compiled = original(p, flags)
        if isinstance(p, (str, bytes)) and not flags & re.DEBUG:
            try:
                entry = _pattern_entry(p, flags)
            except (AttributeError, TypeError):  # another interpreter's internals: not cached
                return compiled
            if _sre_equal(compiled, p, entry):
                patterns[(p, flags)] = entry
        return compiled

    def recording_exec(source, globals=None, locals=None, /):  # type: ignore[no-untyped-def]
        if isinstance(source, str):
            code = table[source] = _compile(source)
            return builtins.exec(code, globals, locals)
        return builtins.exec(source, globals, locals)

    dataclasses.exec = recording_exec  # type: ignore[attr-defined]
    recording_compile.original = original  # type: ignore[attr-defined]
    re._compiler.compile = recording_compile
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - a module that needs the running guest: not cached
                print(f"codecache: {name} not imported here: {exc}", file=sys.stderr)
        try:
            _build_router()
        except Exception as exc:  # noqa: BLE001 - the start compiles them itself then
            print(f"codecache: the API's routes not compiled here: {exc}", file=sys.stderr)
    finally:
        uninstall()
    return table, patterns


class _Stub:
    """Stands in for every engine service while a router is built: registering only takes their methods."""

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return _Stub()

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _Stub()


def _build_router() -> None:
    """`serve` compiles a pattern per API route (~90) when it builds its router: build one here, with stand-in
    services, so that those patterns are recorded too."""
    from pymachine_agent.api import build_router

    build_router(_Stub())  # type: ignore[arg-type]


def _sre_equal(compiled, p, entry) -> bool:  # type: ignore[no-untyped-def]
    """The pattern rebuilt from `entry` is the one `re` compiled (same flags, groups and names)."""
    import _sre

    again = _sre.compile(p, *entry)
    return (again.flags, again.groups, again.groupindex) == (
        compiled.flags,
        compiled.groups,
        compiled.groupindex,
    )


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


def write(path: str, table: dict, patterns: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        marshal.dump((_tag(), table, patterns), fh)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    path = argv[0] if argv else default_path()
    table, patterns = record(agent_modules())
    write(path, table, patterns)
    print(f"codecache: {len(table)} dataclass method texts, {len(patterns)} regular expressions into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
