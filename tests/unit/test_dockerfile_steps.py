"""Config-only instructions and ARG on a stage (pure): substitution scope, Docker's CMD/ENTRYPOINT rule."""

from __future__ import annotations

import pytest

from pymachine_agent.build.builder import BuildParams, _label_instruction
from pymachine_agent.build.dockerfile import DockerfileError, parse
from pymachine_agent.build.steps import StageState, apply_arg, apply_config, base_config, command


def run(text: str, state: StageState | None = None, build_args: dict | None = None) -> StageState:
    df = parse("FROM scratch\n" + text)
    state = state or StageState("sha256:p", {})
    for ins in df.stages[0].commands:
        if ins.cmd == "ARG":
            apply_arg(ins, state, build_args or {}, {"G": "global"}, df.escape)
        else:
            changes, _ = apply_config(ins, state, df.escape)
            state.config.update(changes)
    return state


def test_env_substitution_order_and_override() -> None:
    st = run(
        'ENV A=1 B="two words"\nENV A=3 C=${A}x\nENV PATH=/opt:$PATH\n',
        StageState("i", {"Env": ["PATH=/bin"]}),
    )
    # PATH keeps its position; ENV values see the env from before the instruction
    assert st.config["Env"] == ["PATH=/opt:/bin", "A=3", "B=two words", "C=1x"]


def test_arg_scoping_build_args_and_env_precedence() -> None:
    st = run("ARG V=default\nARG G\nARG B\nENV FROM_ARG=$V-$G-$B\n", build_args={"B": "cli"})
    assert st.args == {"V": "default", "G": "global", "B": "cli"}
    assert "FROM_ARG=default-global-cli" in st.config["Env"]
    st = run("ARG V=a\nENV V=b\nLABEL v=$V\n")
    assert st.config["Labels"] == {"v": "b"}  # ENV wins over ARG of the same name
    assert st.run_env() == ["V=b"]  # ...and the ARG is not added twice to RUN's environment
    st = run("ARG ONLY=x\n")
    assert st.run_env() == ["ONLY=x"]


def test_workdir_user_labels_expose_volume_stopsignal() -> None:
    st = run(
        "ARG D=app\nWORKDIR /srv\nWORKDIR $D\nWORKDIR ../x\nUSER 1000:1000\nLABEL a=1 \"b c\"='d e'\n"
        'EXPOSE 80 53/udp 8000-8001\nVOLUME /data $D\nVOLUME ["/y"]\nSTOPSIGNAL SIGINT\nMAINTAINER me\n'
    )
    c = st.config
    assert c["WorkingDir"] == "/srv/x" and c["User"] == "1000:1000"
    assert c["Labels"] == {"a": "1", "b c": "d e"}
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert c["Volumes"] == {"/data": {}, "app": {}, "/y": {}}
    assert c["StopSignal"] == "SIGINT" and st.author == "me"
    with pytest.raises(DockerfileError, match="line 2: STOPSIGNAL: invalid signal: SIGNOPE"):
        run("STOPSIGNAL SIGNOPE\n")
    with pytest.raises(DockerfileError, match="line 2: EXPOSE: invalid containerPort: http"):
        run("EXPOSE http\n")


def test_cmd_entrypoint_shell_rules() -> None:
    st = run('CMD ["a"]\nENTRYPOINT ["e"]\n')
    assert st.config["Cmd"] == ["a"] and st.config["Entrypoint"] == ["e"]  # CMD set in this stage survives
    st = run('ENTRYPOINT ["e"]\n', StageState("i", {"Cmd": ["from-base"]}))
    assert st.config["Cmd"] is None  # a new ENTRYPOINT drops the base image's CMD
    st = run('SHELL ["/bin/bash", "-o", "pipefail", "-c"]\nCMD echo $HOME\n')
    assert st.config["Cmd"] == ["/bin/bash", "-o", "pipefail", "-c", "echo $HOME"]  # not substituted
    df = parse("FROM scratch\nRUN echo hi\n")
    assert command(df.stages[0].commands[0], {}) == ["/bin/sh", "-c", "echo hi"]


def test_healthcheck_onbuild_and_base_config() -> None:
    st = run("HEALTHCHECK --interval=5s --retries=2 CMD true\nONBUILD RUN echo x\nONBUILD COPY a b\n")
    assert st.config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5 * 10**9, "Retries": 2}
    assert st.config["OnBuild"] == ["RUN echo x", "COPY a b"]
    assert base_config({"config": {"OnBuild": ["RUN x"], "Env": ["A=1"]}}) == {
        "Env": ["A=1"],
        "OnBuild": None,
    }


def test_params_from_query_and_label_step() -> None:
    p = BuildParams.from_query(
        {
            "t": ["a:1", "b"],
            "buildargs": '{"X":"1"}',
            "labels": '{"L":"v"}',
            "q": "1",
            "rm": "True",
            "nocache": "0",
        }
    )
    assert p.tags == ["a:1", "b"] and p.build_args == {"X": "1"} and p.quiet and p.rm and not p.nocache
    assert BuildParams.from_query({"t": "only"}).tags == ["only"]
    assert BuildParams.from_query({}).rm  # Docker's default
    ins = _label_instruction({"k": "it's $HOME"}, 3)
    st = StageState("i", {})
    changes, _ = apply_config(ins, st, "\\")
    assert changes["Labels"] == {"k": "it's $HOME"}  # build-parameter labels are literal


def test_platform_args_are_there_when_a_stage_declares_them() -> None:
    from pymachine_agent.build.builder import platform_args

    plat = platform_args()
    assert plat["TARGETPLATFORM"] == f"{plat['TARGETOS']}/{plat['TARGETARCH']}" or plat["TARGETVARIANT"]
    assert plat["BUILDARCH"] == plat["TARGETARCH"] and plat["TARGETOS"] == "linux"
    df = parse("FROM scratch\nARG TARGETARCH\nENV ARCH=$TARGETARCH OS=$TARGETOS\n")
    state = StageState("i", {})
    arg, env = df.stages[0].commands
    apply_arg(arg, state, {}, plat, df.escape)
    changes, _ = apply_config(env, state, df.escape)
    assert changes["Env"] == [f"ARCH={plat['TARGETARCH']}", "OS="]  # only declared ARGs are in scope
