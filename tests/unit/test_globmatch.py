"""The `.dockerignore` / COPY glob matcher: moby's semantics, and no exponential time on hostile patterns."""

from __future__ import annotations

import random
import re

import pytest
from support.deadline import run_within

from pymachine_agent.build.context import ContextError, DockerIgnore, go_match
from pymachine_agent.build.globmatch import Glob, GlobError


def moby_regex(pattern: str, double_star: bool) -> str:
    """moby/patternmatcher's translation to a regex (the backtracking reference for small inputs)."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*" and double_star and i < n and pattern[i] == "*":
            i += 1
            if i < n and pattern[i] == "/":
                i += 1
            out.append(".*" if i >= n else "(.*/)?")
        elif ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i - 1 : end + 1])
            i = end + 1
        else:
            out.append(re.escape(ch))
    return "".join(out) + "$"


@pytest.mark.parametrize("double_star", [True, False])
def test_agrees_with_the_regex_translation_on_random_inputs(double_star: bool) -> None:
    rng = random.Random(12)
    atoms = ["a", "b", "/", "*", "**", "**/", "?", "[ab]", "[^a]", "[a-b]", "."]
    for _ in range(4000):
        pattern = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 7)))
        glob = Glob(pattern, double_star)
        if glob._suffix is not None:
            continue  # moby answers those without its regex (see test_leading_double_star_is_a_suffix)
        regex = re.compile(moby_regex(pattern, double_star), re.S)
        for _ in range(8):
            path = "".join(rng.choice("ab/.") for _ in range(rng.randint(0, 8)))
            assert glob.match(path) == bool(regex.match(path)), (pattern, path)
            parents = ["/".join(path.split("/")[: k + 1]) for k in range(path.count("/"))]
            expected = bool(regex.match(path)) or any(regex.match(p) for p in parents)
            assert glob.match_or_parent(path) == expected, (pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("**/x", "x", True),
        ("**/x", "a/b/x", True),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "ab", False),
        ("a/**", "a/b/c", True),
        ("a**b", "a/x/b", True),  # `**` before text is "(.*/)?", as in moby
        ("a**b", "axb", False),
        ("**foo", "barfoo", True),  # moby's suffix shortcut for a leading `**` + plain text
        ("**/foo", "barfoo", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[\\]]x", "]x", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a\\", "a\\", True),  # a trailing backslash stands for itself
    ],
)
def test_semantics(pattern: str, path: str, hit: bool) -> None:
    assert Glob(pattern, double_star=True).match(path) is hit


def test_bad_patterns_are_errors() -> None:
    for bad in ("[abc", "[]", "[z-a]", "[a\\"):
        with pytest.raises(GlobError):
            Glob(bad)
    with pytest.raises(ContextError, match="unclosed"):
        DockerIgnore(["ok", "x[y"])
    with pytest.raises(ContextError):
        go_match("[", "x")


def test_stacked_double_stars_against_a_deep_path_finish() -> None:
    deep = "/".join(["a"] * 60)
    patterns = [
        "/".join(["**"] * 12) + "/x",
        "**/" + "a**/" * 12 + "b",
        "**/a**" * 12 + "b",
        "*a" * 40 + "b",
        "**/" + "*a" * 40 + "*b",
    ]
    ignore = DockerIgnore(patterns)

    def run() -> bool:
        return any(ignore.ignored(deep + "/y") or go_match("*a" * 40 + "b", "a" * 250) for _ in range(50))

    assert run_within(10, run) == ("ok", False)


def test_the_dfa_cache_stays_bounded_and_right_across_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymachine_agent.build import globmatch

    monkeypatch.setattr(globmatch, "_STATE_LIMIT", 4)  # resets all the time
    glob = Glob("**/*a**/*a**/b?", double_star=True)
    regex = re.compile(moby_regex(glob.pattern, True), re.S)
    rng = random.Random(3)
    for _ in range(2000):
        path = "".join(rng.choice("ab/x") for _ in range(rng.randint(0, 12)))
        parents = ["/".join(path.split("/")[: k + 1]) for k in range(path.count("/"))]
        assert glob.match_or_parent(path) == any(regex.match(p) for p in [path, *parents]), path
        assert len(glob._sets) <= 4
