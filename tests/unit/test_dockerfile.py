"""The Dockerfile parser: every instruction, directives, continuations, forms, and errors naming the line."""

from __future__ import annotations

import pytest

from pymachine_agent.build.dockerfile import DockerfileError, HealthCheck, parse, parse_duration


def one(text: str):
    df = parse("FROM scratch\n" + text)
    assert len(df.stages[0].commands) == 1
    return df.stages[0].commands[0]


def test_stages_names_and_global_args() -> None:
    df = parse(
        "ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG} AS Build\nRUN x\n"
        "FROM scratch\nCOPY --from=build /a /a\n"
    )
    assert [a.pairs for a in df.meta_args] == [[("BASE", "busybox")], [("TAG", None)]]
    assert [s.base for s in df.stages] == ["${BASE}:${TAG}", "scratch"]
    assert df.stages[0].name == "build"  # stage names are case-insensitive
    assert df.stage_index("BUILD") == 0 and df.stage_index("1") == 1
    with pytest.raises(KeyError):
        df.stage_index("nope")
    assert df.stages[1].commands[0].flags == {"from": "build"}


def test_from_platform_flag_and_bad_forms() -> None:
    df = parse("FROM --platform=linux/arm64 busybox\n")
    assert df.stages[0].platform == "linux/arm64"
    with pytest.raises(DockerfileError, match="line 1: FROM: FROM requires either one argument"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match="line 2: FROM: duplicate name"):
        parse("FROM a AS x\nFROM b AS x\n")
    with pytest.raises(DockerfileError, match="invalid name for build stage"):
        parse("FROM a AS 9x\n")


def test_shell_and_exec_forms() -> None:
    run = one("RUN echo hi && ls\n")
    assert (run.args, run.json) == (["echo hi && ls"], False)
    run = one('RUN ["/bin/echo", "hi there"]\n')
    assert (run.args, run.json) == (["/bin/echo", "hi there"], True)
    cmd = one('CMD ["cat","/hello.txt"]\n')
    assert cmd.json and cmd.args == ["cat", "/hello.txt"] and cmd.original == 'CMD ["cat","/hello.txt"]'
    # not valid JSON: the shell form, like Docker
    ent = one("ENTRYPOINT [not json\n")
    assert (ent.args, ent.json) == (["[not json"], False)
    assert one("CMD []\n").args == [] and one("CMD []\n").json


def test_continuations_comments_and_blank_lines_keep_line_numbers() -> None:
    text = "# a comment\n\nFROM busybox\n\nRUN echo a && \\\n    # inner comment\n\n    echo b\nUSER nobody\n"
    df = parse(text)
    run, user = df.stages[0].commands
    assert run.line == 5 and run.args == ["echo a &&     echo b"]
    assert user.line == 9 and user.args == ["nobody"]
    assert df.stages[0].from_instr.line == 3


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM scratch\nRUN dir c:\\ && `\n  echo x\nCOPY a\\b c\\\n")
    run, copy = df.stages[0].commands
    assert df.escape == "`"
    assert run.args == ["dir c:\\ &&   echo x"]  # backslash is an ordinary char now
    assert copy.args == ["a\\b", "c\\"]


def test_directives_only_at_the_top_and_syntax_ignored() -> None:
    df = parse("# syntax=docker/dockerfile:1\n# escape=\\\nFROM scratch\n")
    assert df.escape == "\\"
    # after a blank line, `# escape=` is an ordinary comment
    assert parse("\n# escape=`\nFROM scratch\n").escape == "\\"
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=`\nFROM scratch\n")
    with pytest.raises(DockerfileError, match="invalid escape token"):
        parse("# escape=x\nFROM scratch\n")


def test_env_label_forms() -> None:
    env = one('ENV A=1 B="two words" C=\\$x\n')
    assert env.pairs == [("A", "1"), ("B", '"two words"'), ("C", "\\$x")]  # quotes go at substitution time
    assert one("ENV NAME some value here\n").pairs == [("NAME", "some value here")]
    label = one('LABEL "com.example.x"="y" version=1.0\n')
    assert label.pairs == [('"com.example.x"', '"y"'), ("version", "1.0")]
    with pytest.raises(DockerfileError, match="line 2: ENV: ENV must have two arguments"):
        parse("FROM scratch\nENV ONLY\n")
    with pytest.raises(DockerfileError, match="line 2: LABEL: syntax error - can't find = in 'b'"):
        parse("FROM scratch\nLABEL a=1 b\n")


def test_arg_forms() -> None:
    assert one("ARG A\n").pairs == [("A", None)]
    assert one("ARG A=1 B\n").pairs == [("A", "1"), ("B", None)]
    with pytest.raises(DockerfileError, match="line 2: ARG: ARG requires at least one argument"):
        parse("FROM scratch\nARG\n")


def test_copy_add_forms_and_flags() -> None:
    copy = one("COPY --chown=1:2 --from=build a b /dst/\n")
    assert copy.flags == {"chown": "1:2", "from": "build"} and copy.args == ["a", "b", "/dst/"]
    add = one('ADD ["a b", "/x y/"]\n')
    assert add.json and add.args == ["a b", "/x y/"]
    with pytest.raises(DockerfileError, match="line 2: COPY: COPY requires at least two arguments"):
        parse("FROM scratch\nCOPY onlyone\n")
    with pytest.raises(DockerfileError, match="line 2: COPY: unknown flag: --bogus"):
        parse("FROM scratch\nCOPY --bogus=1 a b\n")
    with pytest.raises(DockerfileError, match="line 2: RUN: the --mount option requires BuildKit"):
        parse("FROM scratch\nRUN --mount=type=cache,target=/x true\n")
    with pytest.raises(DockerfileError, match="heredocs"):
        parse("FROM scratch\nRUN <<EOF\necho\nEOF\n")


def test_single_value_instructions() -> None:
    assert one("WORKDIR /a b\n").args == ["/a b"]
    assert one("USER 1000:1000\n").args == ["1000:1000"]
    assert one("STOPSIGNAL SIGTERM\n").args == ["SIGTERM"]
    assert one("MAINTAINER me <me@x>\n").args == ["me <me@x>"]
    assert one("EXPOSE 80 443/tcp 53/udp\n").args == ["80", "443/tcp", "53/udp"]
    assert one("VOLUME /a /b\n").args == ["/a", "/b"]
    assert one('VOLUME ["/data"]\n').args == ["/data"]
    assert one('SHELL ["/bin/bash", "-c"]\n').args == ["/bin/bash", "-c"]
    for bad, what in [
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("USER", "USER requires exactly one argument"),
        ("STOPSIGNAL A B", "STOPSIGNAL requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ('VOLUME [""]', "VOLUME specified can not be an empty string"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("RUN", "RUN requires at least one argument"),
    ]:
        with pytest.raises(DockerfileError, match=f"line 3: {bad.split()[0]}: {what}"):
            parse("FROM scratch\n\n" + bad + "\n")


def test_healthcheck() -> None:
    hc = one("HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD curl -f http://localhost/\n").health
    assert hc == HealthCheck(("CMD-SHELL", "curl -f http://localhost/"), 5 * 10**9, 90 * 10**9, 0, 0, 3)
    assert one('HEALTHCHECK CMD ["true"]\n').health.test == ("CMD", "true")
    assert one("HEALTHCHECK NONE\n").health.test == ("NONE",)
    with pytest.raises(DockerfileError, match="line 2: HEALTHCHECK: unknown type 'RUN'"):
        parse("FROM scratch\nHEALTHCHECK RUN x\n")
    with pytest.raises(DockerfileError, match="--interval: time: invalid duration"):
        parse("FROM scratch\nHEALTHCHECK --interval=5x CMD true\n")
    assert parse_duration("1h2m3.5s") == (3600 + 120 + 3.5) * 10**9
    assert parse_duration("250ms") == 250 * 10**6


def test_onbuild() -> None:
    ins = one("ONBUILD RUN echo hi\n")
    assert ins.sub is not None and ins.sub.cmd == "RUN" and ins.sub_text == "RUN echo hi"
    with pytest.raises(DockerfileError, match="line 2: ONBUILD: FROM isn't allowed as an ONBUILD trigger"):
        parse("FROM scratch\nONBUILD FROM x\n")
    with pytest.raises(DockerfileError, match="line 2: FOO: unknown instruction: FOO"):
        parse("FROM scratch\nONBUILD FOO x\n")


def test_errors_name_line_and_instruction() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM busybox\nRUN true\n\nFOO bar\n")
    assert info.value.line == 4 and info.value.instruction == "FOO"
    assert str(info.value) == "Dockerfile parse error on line 4: FOO: unknown instruction: FOO"
    with pytest.raises(DockerfileError, match="line 1: RUN: no build stage in current context"):
        parse("RUN true\nFROM busybox\n")
    with pytest.raises(DockerfileError, match="no FROM instruction"):
        parse("# only a comment\n\n")


def test_keywords_are_case_insensitive_and_crlf_and_bom() -> None:
    df = parse("\ufefffrom busybox\r\nrun echo hi\r\n")
    assert df.stages[0].base == "busybox" and df.stages[0].commands[0].cmd == "RUN"
    assert df.stages[0].commands[0].args == ["echo hi"]
