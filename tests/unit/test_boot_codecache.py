"""The code cache of the guest agent (pymachine_agent/codecache.py): what the image build records is what the
agent's start runs, and the dataclasses and regular expressions come out the same as compiled ones."""

from __future__ import annotations

import dataclasses
import marshal
import re
import re._compiler
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymachine_agent import codecache

MODULE = textwrap.dedent(
    r"""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Port:
        proto: str
        number: int = 80
        tags: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(order=True)
    class Name:
        value: str

    import re

    WORD = re.compile(r"(?P<word>[a-z]+)-(\d+)(?i:X)?")
    BYTES = re.compile(rb"^HTTP/(\d)\.(\d)$", re.M)
    """
)


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "cc_sample.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    codecache.Stats.hits = codecache.Stats.misses = codecache.Stats.re_hits = codecache.Stats.re_misses = 0
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cc_sample", None)
        codecache.uninstall()


def fresh_sample():  # type: ignore[no-untyped-def]
    sys.modules.pop("cc_sample", None)
    import cc_sample  # type: ignore[import-not-found]

    return cc_sample


def test_recorded_code_is_what_the_start_runs_and_the_classes_behave_the_same(module_dir: Path) -> None:
    plain = fresh_sample()  # compiled the usual way
    sys.modules.pop("cc_sample")
    re.purge()  # re's own cache would hand back the patterns compiled above
    table, patterns = codecache.record(["cc_sample"])  # what the image build does, in a fresh process
    assert table and all(text.startswith("def __create_fn__(") for text in table)
    assert (plain.WORD.pattern, 0) in patterns and (plain.BYTES.pattern, re.M) in patterns
    path = module_dir / "cache.marshal"
    codecache.write(str(path), table, patterns)

    re.purge()
    assert codecache.install(str(path))
    cached = fresh_sample()
    assert codecache.Stats.hits > 0 and codecache.Stats.misses == 0
    assert codecache.Stats.re_hits == 2 and codecache.Stats.re_misses == 0
    for name in ("WORD", "BYTES"):
        a, b = getattr(plain, name), getattr(cached, name)
        assert a is not b and a == b  # Pattern equality: pattern, flags and opcodes
        assert (a.flags, a.groups, a.groupindex) == (b.flags, b.groups, b.groupindex)
    assert cached.WORD.match("abc-12x").groupdict() == {"word": "abc"}
    assert cached.BYTES.search(b"x\nHTTP/1.1").groups() == (b"1", b"1")
    for name in ("Port", "Name"):
        a, b = getattr(plain, name), getattr(cached, name)
        for method in ("__init__", "__repr__", "__eq__"):
            assert getattr(a, method).__code__.co_code == getattr(b, method).__code__.co_code, (name, method)
        assert a.__init__.__annotations__ == b.__init__.__annotations__
    port = cached.Port("tcp")
    assert (port.number, port.tags, repr(port)) == (80, [], "Port(proto='tcp', number=80, tags=[])")
    assert port == cached.Port("tcp", 80) and port != cached.Port("udp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        port.number = 1  # type: ignore[misc]
    assert cached.Name("a") < cached.Name("b")
    assert cached.Port.__init__.__annotations__["proto"] is str  # evaluated, not a string: no future flags


def test_a_text_the_cache_lacks_is_compiled_as_before(module_dir: Path) -> None:
    path = module_dir / "cache.marshal"
    codecache.write(str(path), {}, {("unrelated", 0): (0, [1], 0, {}, (None,))})
    re.purge()
    assert codecache.install(str(path))
    cached = fresh_sample()
    assert codecache.Stats.hits == 0 and codecache.Stats.misses > 0
    assert codecache.Stats.re_hits == 0 and codecache.Stats.re_misses == 2
    assert cached.WORD.match("ab-1").group("word") == "ab"
    assert cached.Port.__init__.__annotations__["proto"] is str  # this file's `annotations` future not leaked
    assert repr(cached.Port("udp", 53)) == "Port(proto='udp', number=53, tags=[])"


def test_a_missing_damaged_or_foreign_cache_changes_nothing(module_dir: Path) -> None:
    assert not codecache.install(str(module_dir / "none.marshal"))
    damaged = module_dir / "damaged.marshal"
    damaged.write_bytes(b"\x00garbage")
    assert not codecache.install(str(damaged))
    foreign = module_dir / "foreign.marshal"
    foreign.write_bytes(marshal.dumps(("cpython-39 3.9.2", {}, {})))  # another interpreter's code objects
    assert not codecache.install(str(foreign))
    assert "exec" not in vars(dataclasses)
    assert not hasattr(re._compiler.compile, "original")
    assert repr(fresh_sample().Name("x")) == "Name(value='x')"


def test_every_agent_module_is_listed_for_the_image_build() -> None:
    modules = codecache.agent_modules()
    assert "pymachine_agent" in modules and "pymachine_agent.engine" in modules
    assert "pymachine_agent.network.manager" in modules and "pymachine_agent.__main__" not in modules


def test_the_api_routes_patterns_are_recorded_with_the_imports() -> None:
    re.purge()
    try:
        _, patterns = codecache.record([])
    finally:
        codecache.uninstall()
    routes = [p for p, _ in patterns if isinstance(p, str) and p.startswith("^/")]
    assert "^/_ping/?$" in routes and any("(?P<" in r for r in routes) and len(routes) > 50
