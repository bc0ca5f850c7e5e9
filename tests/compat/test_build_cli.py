"""`docker build` (the real docker 28 CLI, legacy builder) against our agent: instructions, cache, stages,
.dockerignore and the error cases."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

from support.agent import BUSYBOX_REF, Agent
from support.build import build_agent, write_context  # noqa: F401 - build_agent is a fixture

BB = BUSYBOX_REF


def steps(output: str) -> list[str]:
    """The build output split per step (each chunk starts with `Step n/m : ...`)."""
    return ["Step " + part for part in re.split(r"^Step ", output, flags=re.M)[1:]]


def build(agent: Agent, ctx: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return agent.docker("build", *args, str(ctx), check=check, timeout=300)


def run(agent: Agent, *args: str) -> str:
    return agent.docker("run", "--rm", *args).stdout


def layer_count(agent: Agent) -> int:
    return len(list((agent.state_dir / "images" / "layers").iterdir()))


def test_run_copy_cmd_stream_and_iidfile(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {BB}\nRUN echo hello from RUN > /hello.txt && echo ran\n"
            'COPY a.txt /a.txt\nCMD ["cat","/hello.txt"]\n',
            "a.txt": "aaa\n",
        },
    )
    iid = tmp_path / "iid"
    out = build(build_agent, ctx, "-t", "bt-basic:1", "--iidfile", str(iid)).stdout
    parts = steps(out)
    assert [p.splitlines()[0] for p in parts] == [
        f"Step 1/4 : FROM {BB}",
        "Step 2/4 : RUN echo hello from RUN > /hello.txt && echo ran",
        "Step 3/4 : COPY a.txt /a.txt",
        'Step 4/4 : CMD ["cat","/hello.txt"]',
    ]
    assert re.search(
        r" ---> Running in [0-9a-f]{12}\nran\n ---> Removed intermediate container [0-9a-f]{12}\n", parts[1]
    )
    built = re.search(r"^Successfully built ([0-9a-f]{12})$", out, re.M)
    assert built and "Successfully tagged bt-basic:1" in out
    full = build_agent.docker("image", "inspect", "-f", "{{.Id}}", "bt-basic:1").stdout.strip()
    assert full.startswith("sha256:" + built.group(1)) and iid.read_text().strip() == full  # aux ID
    assert run(build_agent, "bt-basic:1") == "hello from RUN\n"
    assert run(build_agent, "bt-basic:1", "cat", "/a.txt") == "aaa\n"
    # the intermediate RUN container is gone
    assert build_agent.docker("ps", "-aq").stdout.strip() == ""


def test_unchanged_rebuild_uses_cache_and_a_changed_file_rebuilds_from_its_step(
    build_agent: Agent,  # noqa: F811
    tmp_path: Path,
) -> None:
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {BB}\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cp /a.txt /copy.txt\n"
            "ENV K=v\n",
            "a.txt": "first\n",
        },
    )
    first = build(build_agent, ctx, "-t", "bt-cache").stdout
    layers = layer_count(build_agent)
    image = build_agent.docker("image", "inspect", "-f", "{{.Id}}", "bt-cache").stdout
    again = build(build_agent, ctx, "-t", "bt-cache").stdout
    assert all(" ---> Using cache" in part for part in steps(again)[1:]), again
    assert "Running in" not in again
    assert layer_count(build_agent) == layers  # no new layer
    assert build_agent.docker("image", "inspect", "-f", "{{.Id}}", "bt-cache").stdout == image
    assert "Using cache" not in "".join(steps(first)[1:])

    (ctx / "a.txt").write_text("second\n")
    changed = steps(build(build_agent, ctx, "-t", "bt-cache").stdout)
    assert "Using cache" in changed[1]  # RUN echo one: before the change
    assert "Using cache" not in changed[2] and "Using cache" not in changed[3] and "Running in" in changed[3]
    assert "Using cache" not in changed[4]  # everything after the changed step is rebuilt
    assert run(build_agent, "bt-cache", "cat", "/copy.txt") == "second\n"

    nocache = build(build_agent, ctx, "--no-cache", "-t", "bt-cache").stdout
    assert "Using cache" not in nocache and "Running in" in nocache


def test_multi_stage_copy_from_and_target(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    dockerfile = (
        f"FROM {BB} AS builder\n"
        "RUN mkdir /out && echo built > /out/artifact\n"
        f"FROM {BB} AS other\n"
        "RUN echo other > /other\n"
        "FROM scratch\n"
        "COPY --from=builder /out/artifact /artifact\n"
        f"COPY --from={BB} /bin/busybox /bin/busybox\n"
        "COPY --from=1 /other /other\n"
        'ENTRYPOINT ["/bin/busybox"]\n'
    )
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    out = build(build_agent, ctx, "-t", "bt-multi").stdout
    assert "Step 9/9" in out
    assert run(build_agent, "bt-multi", "cat", "/artifact", "/other") == "built\nother\n"
    top = set(run(build_agent, "bt-multi", "ls", "/").split())
    # only what was copied, plus the mount points every running container gets
    assert top == {"artifact", "bin", "other", "dev", "etc", "proc", "sys"}
    out = build(build_agent, ctx, "--target", "builder", "-t", "bt-multi-builder").stdout
    assert "Step 2/2" in out  # only the target stage is built
    assert run(build_agent, "bt-multi-builder", "cat", "/out/artifact") == "built\n"
    assert run(build_agent, "bt-multi-builder", "sh", "-c", "test -e /other || echo absent") == "absent\n"


def test_dockerignore(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {BB}\nCOPY . /ctx\n",
            ".dockerignore": "*.log\nsecret\n!secret/keep.txt\n**/*.tmp\n",
            "app.py": "print()\n",
            "debug.log": "x",
            "sub/deep/x.tmp": "x",
            "sub/deep/y.txt": "y",
            "secret/key": "k",
            "secret/keep.txt": "keep",
        },
    )
    build(build_agent, ctx, "-t", "bt-ignore")
    listing = run(build_agent, "bt-ignore", "find", "/ctx", "-type", "f").split()
    assert sorted(listing) == [
        "/ctx/.dockerignore",
        "/ctx/Dockerfile",
        "/ctx/app.py",
        "/ctx/secret/keep.txt",
        "/ctx/sub/deep/y.txt",
    ]


def _bundle() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"inside the bundle\n"
        info = tarfile.TarInfo("bundle/x.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


EVERYTHING = """\
# escape=\\
ARG BASE=pymachine/busybox
FROM ${BASE}:latest
ARG VERSION=1.0
ARG FROMCLI
LABEL org.example.version=$VERSION "other label"="x y"
ENV APP_HOME=/srv/app \\
    GREETING="hello world"
# a comment between instructions
WORKDIR $APP_HOME
COPY --chown=1234:5678 files/ ./files/
ADD bundle.tar.gz /opt/
ADD plain.txt /opt/plain.txt
RUN echo "$GREETING $VERSION $FROMCLI" > greeting.txt
RUN ["/bin/sh", "-c", "id -u > /uid.txt"]
USER nobody
EXPOSE 8080 53/udp
VOLUME /data
SHELL ["/bin/sh", "-e", "-c"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD test -f /srv/app/greeting.txt
ONBUILD RUN echo triggered > /tmp/triggered
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt"]
"""


def test_every_instruction(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx",
        {"Dockerfile": EVERYTHING, "files/a": "A", "bundle.tar.gz": _bundle(), "plain.txt": "plain\n"},
    )
    build(build_agent, ctx, "--build-arg", "FROMCLI=cli", "-t", "bt-all")
    cfg = json.loads(build_agent.docker("image", "inspect", "-f", "{{json .Config}}", "bt-all").stdout)
    labels = {k: v for k, v in cfg["Labels"].items() if not k.startswith("org.opencontainers.")}  # the base's
    assert labels == {"org.example.version": "1.0", "other label": "x y"}
    assert "APP_HOME=/srv/app" in cfg["Env"] and "GREETING=hello world" in cfg["Env"]
    assert not any(e.startswith(("VERSION=", "FROMCLI=")) for e in cfg["Env"])  # ARGs are not persisted
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}} and cfg["Volumes"] == {"/data": {}}
    assert cfg["Shell"] == ["/bin/sh", "-e", "-c"] and cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -f /srv/app/greeting.txt"],
        "Interval": 30 * 10**9,
        "Timeout": 5 * 10**9,
        "Retries": 2,
    }
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/triggered"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["Cmd"] == ["cat greeting.txt"]
    assert run(build_agent, "bt-all") == "hello world 1.0 cli\n"
    probe = "stat -c %u:%g files/a; cat /opt/bundle/x.txt /opt/plain.txt /uid.txt; whoami"
    assert run(build_agent, "bt-all", probe) == "1234:5678\ninside the bundle\nplain\n0\nnobody\n"

    child = write_context(tmp_path / "child", {"Dockerfile": "FROM bt-all\nLABEL child=1\n"})
    out = build(build_agent, child, "-t", "bt-child").stdout
    assert "# Executing 1 build trigger" in out
    assert run(build_agent, "bt-child", "cat /tmp/triggered") == "triggered\n"
    child_cfg = json.loads(
        build_agent.docker("image", "inspect", "-f", "{{json .Config}}", "bt-child").stdout
    )
    assert not child_cfg.get("OnBuild")  # triggers run once, they are not inherited


def test_malformed_dockerfile_names_line_and_instruction(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {BB}\nRUN true\n\nFOO bar\n"})
    res = build(build_agent, ctx, "-t", "bt-bad", check=False)
    assert res.returncode != 0
    assert "line 4" in res.stderr and "FOO" in res.stderr, res.stderr
    ctx = write_context(tmp_path / "ctx2", {"Dockerfile": f"FROM {BB}\nENV ONLY\n"})
    res = build(build_agent, ctx, check=False)
    assert res.returncode != 0 and "line 2: ENV" in res.stderr


def test_failing_run_reports_status_and_output_and_tags_nothing(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx",
        {"Dockerfile": f"FROM {BB}\nRUN echo good > /g\nRUN echo about to fail && exit 3\nLABEL never=1\n"},
    )
    res = build(build_agent, ctx, "-t", "bt-fail", check=False)
    assert res.returncode == 3
    assert "about to fail" in res.stdout
    assert "returned a non-zero code: 3" in res.stderr
    assert build_agent.docker("image", "inspect", "bt-fail", check=False).returncode != 0


def test_context_cannot_be_left_and_remote_add_is_refused(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "outside.txt").write_text("secret")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {BB}\nCOPY ../outside.txt /x\n"})
    res = build(build_agent, ctx, "-t", "bt-escape", check=False)
    assert res.returncode != 0 and "forbidden path outside the build context" in res.stderr, res.stderr
    ctx = write_context(
        tmp_path / "ctx2", {"Dockerfile": f"FROM {BB}\nADD https://example.com/file.txt /x\n"}
    )
    res = build(build_agent, ctx, check=False)
    assert res.returncode != 0 and "offline" in res.stderr
    ctx = write_context(tmp_path / "ctx3", {"Dockerfile": f"FROM {BB}\nCOPY missing.txt /x\n"})
    res = build(build_agent, ctx, check=False)
    assert res.returncode != 0 and "missing.txt" in res.stderr


def test_dockerfile_from_stdin_and_from_outside_the_context(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    # `docker build -`: the Dockerfile on stdin, no context
    out = build_agent.docker(
        "build", "-t", "bt-stdin", "-", input=f"FROM {BB}\nRUN echo from-stdin > /s\n".encode(), timeout=300
    ).stdout
    assert "Successfully tagged bt-stdin:latest" in out
    assert run(build_agent, "bt-stdin", "cat", "/s") == "from-stdin\n"
    # `-f` naming a Dockerfile outside the context: the CLI adds it to the tar under a generated name
    ctx = write_context(tmp_path / "ctx", {"data.txt": "data\n"})
    (tmp_path / "Other.dockerfile").write_text(f"FROM {BB}\nCOPY data.txt /data.txt\n")
    build(build_agent, ctx, "-f", str(tmp_path / "Other.dockerfile"), "-t", "bt-outside")
    assert run(build_agent, "bt-outside", "cat", "/data.txt") == "data\n"
    # and a tar context (gzip) on stdin
    import gzip

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for name, data in {"Dockerfile": f"FROM {BB}\nCOPY x /x\n", "x": "from-tar\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data.encode()))
    proc = subprocess.run(  # binary stdin: Agent.docker passes text
        ["docker", "build", "-t", "bt-tar", "-"],
        input=gzip.compress(tar.getvalue()),
        capture_output=True,
        env=build_agent.env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert run(build_agent, "bt-tar", "cat", "/x") == "from-tar\n"


def test_quiet_label_and_build_arg_from_the_environment(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    ctx = write_context(
        tmp_path / "ctx", {"Dockerfile": f"FROM {BB}\nARG FROM_ENV\nRUN echo $FROM_ENV > /v\n"}
    )
    env = build_agent.env()
    env["FROM_ENV"] = "env-value"
    proc = subprocess.run(  # `--build-arg NAME` without a value takes it from the client's environment
        ["docker", "build", "-q", "--no-cache", "--label", "team=build", "--build-arg", "FROM_ENV", str(ctx)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    image = proc.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image)  # -q prints only the id
    assert run(build_agent, image, "cat", "/v") == "env-value\n"
    labels = json.loads(build_agent.docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout)
    assert labels["team"] == "build"
