"""Detach keys: moby's spelling of keys and its escape proxy's hold-back of a partial sequence."""

from __future__ import annotations

import pytest

from pymachine_agent.detachkeys import DEFAULT, EscapeScanner, InvalidDetachKeys, parse


def test_parse() -> None:
    assert parse("") == DEFAULT == b"\x10\x11"
    assert parse("ctrl-x") == b"\x18"
    assert parse("ctrl-@,ctrl-[,a") == b"\x00\x1ba"
    for bad in ("ctrl-", "ctrl-1", "ab", "ctrl-xx"):
        with pytest.raises(InvalidDetachKeys, match="Invalid detach keys"):
            parse(bad)


def test_scanner_detaches_on_the_sequence_split_over_reads() -> None:
    s = EscapeScanner(b"\x10\x11")
    assert s.feed(b"abc\x10") == (b"abc", False)
    assert s.feed(b"\x11rest") == (b"", True)


def test_scanner_passes_a_broken_sequence_on() -> None:
    s = EscapeScanner(b"\x10\x11")
    assert s.feed(b"\x10x") == (b"\x10x", False)
    assert s.feed(b"\x10\x10\x11") == (b"\x10", True)
