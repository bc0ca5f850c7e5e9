"""Variable substitution in Dockerfile words (Docker's shell lexer rules)."""

from __future__ import annotations

import pytest

from pymachine_agent.build.shellwords import SubstitutionError, split_words, substitute

ENV = {"A": "alpha", "EMPTY": "", "P": "/usr/local"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "alpha"),
        ("${A}", "alpha"),
        ("x${A}y", "xalphay"),
        ("$A/bin", "alpha/bin"),
        ("$UNSET", ""),
        ("${UNSET:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET-def}", "def"),
        ("${A:-def}", "alpha"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${UNSET:-$P/x}", "/usr/local/x"),  # nested expansion in the default
        ('"$A b"', "alpha b"),  # double quotes expand, quotes are removed
        ("'$A b'", "$A b"),  # single quotes are literal
        ("\\$A", "$A"),  # escaped dollar
        ('"\\$A"', "$A"),
        ('"a\\b"', "a\\b"),  # in double quotes only " $ and \\ are escapable
        ("a\\ b", "a b"),
        ("$", "$"),
        ("cost: $5", "cost: "),  # $5 is a (unset) positional name, like Docker
        ("a b  c", "a b  c"),  # one word in, one word out: whitespace kept
    ],
)
def test_substitute(word: str, expected: str) -> None:
    assert substitute(word, ENV) == expected


def test_backtick_escape() -> None:
    assert substitute("`$A", ENV, escape="`") == "$A"
    assert substitute("c:\\dir\\$A", ENV, escape="`") == "c:\\dir\\alpha"


def test_required_variable_and_bad_syntax() -> None:
    assert substitute("${A:?must be set}", ENV) == "alpha"
    with pytest.raises(SubstitutionError, match="UNSET: must be set"):
        substitute("${UNSET:?must be set}", ENV)
    with pytest.raises(SubstitutionError, match="missing '}'"):
        substitute("${A", ENV)
    with pytest.raises(SubstitutionError, match="unsupported modifier"):
        substitute("${A%x}", ENV)
    with pytest.raises(SubstitutionError, match="matching double-quote"):
        substitute('"abc', ENV)


def test_split_words_keeps_quotes() -> None:
    assert split_words("A=1 B=\"x y\" C='p q'") == ["A=1", 'B="x y"', "C='p q'"]
    assert split_words("a\\ b c") == ["a\\ b", "c"]
    assert split_words("  ") == []
