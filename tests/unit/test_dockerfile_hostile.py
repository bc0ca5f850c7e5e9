"""A Dockerfile from an untrusted repository: huge or deeply nested input costs linear time and gives a clear
error or a parse, never a RecursionError nor a quadratic regex scan (which holds the GIL: the agent stops)."""

from __future__ import annotations

import pytest
from support.deadline import run_within

from pymachine_agent.build import dockerfile, shellwords
from pymachine_agent.build.dockerfile import DockerfileError


def test_long_blank_run_in_a_directive_line() -> None:
    text = "# escape=`" + " \t" * 200_000 + "\nFROM scratch\n"
    assert run_within(10, lambda: dockerfile.parse(text).escape) == ("ok", "`")
    bad = "# escape=x" + " " * 200_000 + "y\nFROM scratch\n"
    answer = run_within(10, lambda: dockerfile.parse(bad))
    assert answer[:2] == ("raised", "DockerfileError") and "invalid escape token" in answer[2]


def test_many_continuation_lines() -> None:
    text = "FROM scratch\nRUN a \\\n" + "b \\\n" * 300_000 + "c\n"
    kind, arg = run_within(20, lambda: dockerfile.parse(text).stages[0].commands[0].args[0])
    assert kind == "ok" and arg.startswith("a b b") and arg.endswith("b c")


def test_deeply_nested_json_is_shell_form() -> None:
    df = dockerfile.parse("FROM scratch\nCMD " + "[" * 100_000 + "\n")
    cmd = df.stages[0].commands[0]
    assert not cmd.json and cmd.args == ["[" * 100_000]


def test_nested_substitution_is_bounded() -> None:
    ok = "${a:-" * 60 + "x" + "}" * 60
    assert shellwords.substitute(ok, {}) == "x"
    deep = "${a:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(shellwords.SubstitutionError, match="nested more than 64"):
        shellwords.substitute(deep, {})


def test_remote_source_test_is_linear() -> None:
    from pymachine_agent.build.executor import _is_url

    assert run_within(10, lambda: _is_url(".git#" * 200_000 + "\nx")) == ("ok", False)
    for url in ("https://x/y", "git@github.com:a/b", "repo.git", "repo.git#main", "HTTP://X"):
        assert _is_url(url)
    for local in ("src", "a.gitignore", "dir/.git/x"):
        assert not _is_url(local)


def test_parse_errors_still_name_the_line() -> None:
    with pytest.raises(DockerfileError, match="line 2"):
        dockerfile.parse("FROM scratch\nBOGUS x\n")
