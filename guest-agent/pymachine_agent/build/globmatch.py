"""Glob matching for `.dockerignore` and COPY/ADD sources, in time linear in the path: no regex.

The syntax is Go's `filepath.Match` (`*` and `?` never cross `/`, `[...]`/`[^...]` classes with ranges, `\\`
escapes) plus, for `.dockerignore`, the `**` of moby/patternmatcher: `**/` (or `**` before more text) is
"nothing, or anything ending in `/`", and a trailing `**` is "anything".

Why not `re`: a translated pattern such as `**/**/**/…/x` or `*a*a*a*b` makes Python's backtracking engine
take exponential (or high-polynomial) time, and it does so inside one C call that holds the GIL, which stops
every other thread of the agent. Here a pattern is a small NFA simulated one character at a time (Thompson's
construction); the sets of NFA states reached are cached as a DFA built lazily, so a path costs one dict
look-up per character once warm, and never more than O(len(pattern)) per character. The loop is plain
Python, so other threads keep running while a huge context is filtered.
"""

from __future__ import annotations

from dataclasses import dataclass

# Token kinds. Each token is one NFA state; state len(tokens) accepts.
_LIT, _ONE, _CLASS, _STAR, _DSTAR_DIR, _DSTAR_END = range(6)
_CACHE_LIMIT = 1 << 16  # DFA transitions kept per pattern before the cache starts over
_STATE_LIMIT = 1 << 12  # DFA states kept per pattern (each a frozenset): memory stays bounded on any input


class GlobError(ValueError):
    """A malformed pattern (an unclosed or empty `[...]`, a reversed range)."""


@dataclass(frozen=True)
class _Class:
    negate: bool
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    def __contains__(self, ch: str) -> bool:
        hit = ch in self.chars or any(lo <= ch <= hi for lo, hi in self.ranges)
        return hit != self.negate


def _parse_class(pattern: str, i: int) -> tuple[_Class, int]:
    """The class starting just after the `[` at pattern[i-1]; returns it and the index after its `]`."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    start = i
    while True:
        if i >= n:
            raise GlobError(f"syntax error in pattern {pattern!r}: unclosed '['")
        ch = pattern[i]
        if ch == "]" and i > start:
            return _Class(negate, frozenset(chars), tuple(ranges)), i + 1
        if ch == "]":
            raise GlobError(f"syntax error in pattern {pattern!r}: empty character class")
        if ch == "\\":
            i += 1
            if i >= n:
                raise GlobError(f"syntax error in pattern {pattern!r}: unclosed '['")
            ch = pattern[i]
        i += 1
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            hi = pattern[i + 1]
            i += 2
            if hi == "\\":
                if i >= n:
                    raise GlobError(f"syntax error in pattern {pattern!r}: unclosed '['")
                hi = pattern[i]
                i += 1
            if hi < ch:
                raise GlobError(f"syntax error in pattern {pattern!r}: range {ch}-{hi} is reversed")
            ranges.append((ch, hi))
        else:
            chars.add(ch)


def _tokens(pattern: str, double_star: bool) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if double_star and i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append((_DSTAR_END, None) if i >= n else (_DSTAR_DIR, None))
            elif not out or out[-1][0] != _STAR:  # `**` without the extension is `*`; one state is enough
                out.append((_STAR, None))
        elif ch == "?":
            out.append((_ONE, None))
        elif ch == "[":
            cls, i = _parse_class(pattern, i)
            out.append((_CLASS, cls))
        elif ch == "\\" and i < n:
            out.append((_LIT, pattern[i]))
            i += 1
        else:
            out.append((_LIT, ch))  # a trailing backslash stands for itself, as in moby
    return out


class Glob:
    """One compiled pattern. `double_star` turns on moby's `**`; without it this is `filepath.Match`."""

    def __init__(self, pattern: str, double_star: bool = False) -> None:
        self.pattern = pattern
        self._tok = _tokens(pattern, double_star)
        self._suffix: str | None = None
        rest = pattern[2:]
        if double_star and pattern.startswith("**") and not any(c in rest for c in "*?[]\\"):
            # moby's "suffix match" shortcut for a leading `**` followed by plain text: `**foo` matches
            # `barfoo` there, which its regex would not; we keep moby's answer
            self._suffix = rest
        self._start_set = self._closure({0})
        self._reset()

    # -- the NFA --------------------------------------------------------------------------------------
    def _closure(self, states: set[int]) -> frozenset[int]:
        n = len(self._tok)
        stack = list(states)
        while stack:
            s = stack.pop()
            if s < n and self._tok[s][0] in (_STAR, _DSTAR_DIR, _DSTAR_END) and s + 1 not in states:
                states.add(s + 1)
                stack.append(s + 1)
        return frozenset(states)

    def _step(self, states: frozenset[int], ch: str) -> frozenset[int]:
        n = len(self._tok)
        out: set[int] = set()
        for s in states:
            if s > n:  # inside the `.*` of a `(.*/)?`: keep eating, leave after a `/`
                out.add(s)
                if ch == "/":
                    out.add(s - n)
                continue
            if s == n:
                continue
            kind, arg = self._tok[s]
            if kind == _LIT:
                if ch == arg:
                    out.add(s + 1)
            elif kind == _ONE:
                if ch != "/":
                    out.add(s + 1)
            elif kind == _CLASS:
                if ch in arg:  # type: ignore[operator]
                    out.add(s + 1)
            elif kind == _STAR:
                if ch != "/":
                    out.add(s)
            elif kind == _DSTAR_END:
                out.add(s)
            else:  # _DSTAR_DIR
                out.add(n + 1 + s)
                if ch == "/":
                    out.add(s + 1)
        return self._closure(out)

    # -- the lazy DFA ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._ids: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._accepts: list[bool] = []
        self._trans: dict[tuple[int, str], int] = {}
        self._start = self._intern(self._start_set)

    def _intern(self, states: frozenset[int]) -> int:
        found = self._ids.get(states)
        if found is None:
            found = self._ids[states] = len(self._sets)
            self._sets.append(states)
            self._accepts.append(len(self._tok) in states)
        return found

    def _next(self, state: int, ch: str) -> int:
        key = (state, ch)
        found = self._trans.get(key)
        if found is None:
            after = self._step(self._sets[state], ch)
            if len(self._sets) >= _STATE_LIMIT:
                self._reset()  # the ids held by the caller die here; it only uses the one returned
                return self._intern(after)
            if len(self._trans) >= _CACHE_LIMIT:
                self._trans.clear()
            found = self._trans[key] = self._intern(after)
        return found

    def _run(self, path: str, at_parents: bool) -> bool:
        state = self._start
        for ch in path:
            if at_parents and ch == "/" and self._accepts[state]:
                return True
            state = self._next(state, ch)
            if not self._sets[state]:
                return False
        return self._accepts[state]

    # -- the answers ----------------------------------------------------------------------------------
    def match(self, path: str) -> bool:
        """Does the whole `path` match?"""
        if self._suffix is not None:
            return self._suffix_match(path)
        return self._run(path, at_parents=False)

    def match_or_parent(self, path: str) -> bool:
        """Does `path`, or one of its parent directories (`a`, `a/b` for `a/b/c`), match?"""
        if self._suffix is not None:
            return self._suffix_match(path) or any(
                self._suffix_match(path[:i]) for i, c in enumerate(path) if c == "/"
            )
        return self._run(path, at_parents=True)

    def _suffix_match(self, path: str) -> bool:
        suffix = self._suffix or ""
        return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
