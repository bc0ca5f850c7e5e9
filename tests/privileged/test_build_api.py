"""Raw `POST /build` against the real agent on this host: the JSON stream, parameters, the server-side
.dockerignore, what a RUN layer holds, and the errors as errorDetail."""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from pathlib import Path
from urllib.parse import urlencode

from support.agent import BUSYBOX_REF, Agent
from support.build import build_agent, context_tar, errors, post_build, stream_text  # noqa: F401

BB = BUSYBOX_REF


def inspect(agent: Agent, ref: str) -> dict:
    status, _, body = agent.request("GET", f"/v1.44/images/{ref}/json")
    assert status == 200, body
    return json.loads(body)


def test_stream_shape_aux_and_tags(build_agent: Agent) -> None:  # noqa: F811
    body = context_tar({"Dockerfile": f"FROM {BB}\nRUN echo out; echo err >&2\nENV A=1\n"})
    msgs = post_build(build_agent, body, "t=api-a%3A1&t=api-b&dockerfile=Dockerfile")
    assert not errors(msgs)
    assert all(set(m) <= {"stream", "aux"} for m in msgs)
    text = stream_text(msgs)
    assert "out\n" in text and "err\n" in text  # both output streams reach the client
    aux = [m["aux"]["ID"] for m in msgs if "aux" in m]
    built = re.search(r"Successfully built ([0-9a-f]{12})\n", text)
    assert len(aux) == 1 and built and aux[0].startswith("sha256:" + built.group(1))
    assert text.endswith("Successfully tagged api-a:1\nSuccessfully tagged api-b:latest\n")
    assert inspect(build_agent, "api-a:1")["Id"] == inspect(build_agent, "api-b")["Id"] == aux[0]


def test_quiet_sends_only_the_id(build_agent: Agent) -> None:  # noqa: F811
    msgs = post_build(build_agent, context_tar({"Dockerfile": f"FROM {BB}\nLABEL q=1\n"}), "q=1")
    assert len(msgs) == 1 and re.fullmatch(r"sha256:[0-9a-f]{64}\n", msgs[0]["stream"])


def test_server_applies_dockerignore_and_keeps_modes(build_agent: Agent) -> None:  # noqa: F811
    # a client that does not filter (a raw tar): the server still honours .dockerignore
    files = {
        "Dockerfile": f"FROM {BB}\nCOPY . /ctx\nRUN find /ctx | sort; ls -l /ctx/run.sh\n",
        ".dockerignore": "secret*\nDockerfile\n.dockerignore\n",
        "secret.key": "k",
        "run.sh": "#!/bin/sh\n",
        "keep/a": "a",
    }
    text = stream_text(post_build(build_agent, context_tar(files), "t=api-ignore&nocache=1"))
    listing = [line for line in text.splitlines() if line.startswith("/ctx")]
    assert listing == ["/ctx", "/ctx/keep", "/ctx/keep/a", "/ctx/run.sh"]
    assert "-rwxr-xr-x" in text


def test_gzip_context_custom_dockerfile_labels_buildargs(build_agent: Agent) -> None:  # noqa: F811
    body = gzip.compress(
        context_tar({"sub/Build.df": f"FROM {BB}\nARG WHO=nobody\nRUN echo hi-$WHO\n", "x": "y"})
    )
    query = urlencode(
        {"t": "api-gz", "dockerfile": "sub/Build.df", "labels": '{"L":"v"}', "buildargs": '{"WHO":"me"}'}
    )
    msgs = post_build(build_agent, body, query)
    text = stream_text(msgs)
    assert not errors(msgs) and "hi-me\n" in text
    assert 'Step 4/4 : LABEL "L"="v"' in text  # the labels parameter is a last LABEL step, as in Docker
    assert inspect(build_agent, "api-gz")["Config"]["Labels"]["L"] == "v"
    msgs = post_build(build_agent, body, "dockerfile=sub%2FBuild.df&buildargs=%7B%22UNUSED%22%3A%221%22%7D")
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in stream_text(msgs)


def test_run_layer_holds_only_the_commands_changes(build_agent: Agent) -> None:  # noqa: F811
    body = context_tar({"Dockerfile": f"FROM {BB}\nRUN echo x > /made-by-run && rm /etc/group\n"})
    post_build(build_agent, body, "t=api-layer&nocache=1")
    top = inspect(build_agent, "api-layer")["RootFS"]["Layers"][-1]
    diff = build_agent.state_dir / "images" / "layers" / top.split(":")[1] / "diff"
    found = sorted(str(p.relative_to(diff)) for p in diff.rglob("*"))
    # the runtime's /etc/hosts, /etc/hostname, /etc/resolv.conf placeholders are not part of the image;
    # the deletion is kept (as an overlay whiteout)
    assert found == ["etc", "etc/group", "made-by-run"]
    assert (diff / "etc/group").is_char_device()


def test_errors_arrive_as_error_detail_and_nothing_is_tagged(build_agent: Agent) -> None:  # noqa: F811
    msgs = post_build(
        build_agent, context_tar({"Dockerfile": f"FROM {BB}\nRUN echo partial; exit 7\n"}), "t=api-x"
    )
    err = errors(msgs)
    assert len(err) == 1 and err[0]["errorDetail"]["code"] == 7
    assert "returned a non-zero code: 7" in err[0]["error"] and "partial\n" in stream_text(msgs)
    assert build_agent.request("GET", "/v1.44/images/api-x/json")[0] == 404

    msgs = post_build(build_agent, context_tar({"Dockerfile": "FROM scratch\nCOPY\n"}))
    assert "line 2: COPY" in errors(msgs)[0]["error"]
    msgs = post_build(build_agent, context_tar({"Dockerfile": "FROM scratch\n"}), "target=nope")
    assert "failed to reach build target nope" in errors(msgs)[0]["error"]
    msgs = post_build(build_agent, context_tar({"Other": "x"}))
    assert "Cannot locate specified Dockerfile: Dockerfile" in errors(msgs)[0]["error"]
    msgs = post_build(build_agent, context_tar({"Dockerfile": "FROM scratch\n"}), "t=Bad%20Tag")
    assert errors(msgs) and build_agent.request("GET", "/v1.44/images/json")[0] == 200
    evil = tarfile.TarInfo("../../escape")
    msgs = post_build(build_agent, context_tar({"Dockerfile": "FROM scratch\n"}, [evil]))
    assert "outside" in errors(msgs)[0]["error"]
    # a missing base is pulled: from a loopback registry that isn't there (tests never reach out)
    msgs = post_build(build_agent, context_tar({"Dockerfile": "FROM 127.0.0.1:9/does-not-exist\n"}))
    assert "failed to get base image 127.0.0.1:9/does-not-exist" in errors(msgs)[0]["error"]


def test_copy_chown_names_symlinks_and_dir_rules(build_agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    link = tarfile.TarInfo("ln")
    link.type, link.linkname = tarfile.SYMTYPE, "dir/f"
    files = {
        "Dockerfile": f"FROM {BB}\n"
        "COPY --chown=nobody dir /d1\n"
        "COPY dir/f dir/g /multi/\n"
        "COPY ln /viaLink\n"
        "COPY --chmod=600 dir/f /etc/\n"
        "RUN stat -c '%n %u:%g %a' /d1/f /multi/f /multi/g /viaLink /etc/f\n",
        "dir/f": "f",
        "dir/g": "g",
    }
    text = stream_text(post_build(build_agent, context_tar(files, [link]), "nocache=1"))
    assert (
        "/d1/f 65534:65534 644\n/multi/f 0:0 644\n/multi/g 0:0 644\n/viaLink 0:0 644\n/etc/f 0:0 600\n"
        in text
    )
    msgs = post_build(
        build_agent, context_tar({"Dockerfile": f"FROM {BB}\nCOPY a b /notadir\n", "a": "", "b": ""})
    )
    assert "must be a directory and end with a /" in errors(msgs)[0]["error"]


def test_from_scratch_add_rootfs_tarball_with_absolute_links(build_agent: Agent) -> None:  # noqa: F811
    import io
    import shutil

    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w:gz") as tar:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in ("sh", "cat", "echo", "ls"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"  # absolute, as rootfs tarballs have
            tar.addfile(link)
    files = {
        "Dockerfile": "FROM scratch\nADD rootfs.tar.gz /\nRUN echo built-on-scratch > /proof\n"
        'CMD ["/bin/cat", "/proof"]\n',
        "rootfs.tar.gz": rootfs.getvalue(),
    }
    msgs = post_build(build_agent, context_tar(files), "t=api-scratch")
    assert not errors(msgs), msgs
    status, _, body = build_agent.request("GET", "/v1.44/images/api-scratch/json")
    assert status == 200
    assert build_agent.docker("run", "--rm", "api-scratch").stdout == "built-on-scratch\n"
    assert (
        build_agent.docker("run", "--rm", "api-scratch", "/bin/ls", "-l", "/bin/sh")
        .stdout.rstrip()
        .endswith("/bin/sh -> /bin/busybox")
    )


def test_workdir_creates_its_directory_only_when_missing(build_agent: Agent) -> None:  # noqa: F811
    dockerfile = (
        f"FROM {BB} AS one\nWORKDIR /made/here\nWORKDIR /tmp\n"
        f"FROM {BB}\nCOPY --from=one /made /made\nRUN ls -d /made/here && stat -c %a /made/here\n"
    )
    msgs = post_build(build_agent, context_tar({"Dockerfile": dockerfile}), "t=api-workdir&target=one")
    assert not errors(msgs)
    base = len(inspect(build_agent, BB)["RootFS"]["Layers"])
    assert len(inspect(build_agent, "api-workdir")["RootFS"]["Layers"]) == base + 1  # /tmp existed: no layer
    msgs = post_build(build_agent, context_tar({"Dockerfile": dockerfile}))
    assert not errors(msgs) and "/made/here\n755\n" in stream_text(msgs)


def test_pull_falls_back_to_a_local_only_image(build_agent: Agent) -> None:  # noqa: F811
    # an image that exists only here: `--pull` can't fetch it (a loopback registry that isn't there) but the
    # build must still go on with the local copy
    build_agent.docker("tag", BB, "127.0.0.1:9/local-only:1")
    msgs = post_build(
        build_agent, context_tar({"Dockerfile": "FROM 127.0.0.1:9/local-only:1\nLABEL p=1\n"}), "pull=1"
    )
    assert not errors(msgs), msgs
    assert "using the local image" in stream_text(msgs)


def test_run_sees_shell_user_env_args_and_escape_directive(build_agent: Agent) -> None:  # noqa: F811
    dockerfile = (
        "# escape=`\n"
        f"FROM --platform=linux/amd64 {BB}\n"
        "ENV GREETING=hello\n"
        "ARG WHO=world\n"
        "RUN echo $GREETING-$WHO && `\n"
        "    echo continued\n"
        'SHELL ["/bin/echo", "via-shell"]\n'
        "RUN shell-form\n"
        'RUN ["/bin/sh", "-c", "echo exec-form"]\n'
        "USER nobody\n"
        'RUN ["/bin/sh", "-c", "id -u"]\n'
    )
    text = stream_text(post_build(build_agent, context_tar({"Dockerfile": dockerfile}), "nocache=1"))
    assert "[Warning] --platform=linux/amd64 is ignored" in text
    assert "hello-world\ncontinued\n" in text
    assert "via-shell shell-form\n" in text and "exec-form\n" in text
    assert "65534\n" in text


def test_identical_layers_twice_in_one_image(build_agent: Agent) -> None:  # noqa: F811
    # two identical COPYs give one image the same layer twice: overlayfs refuses a repeated lowerdir (ELOOP)
    # unless each layer keeps only its topmost place
    dockerfile = f"FROM {BB}\nCOPY a /a\nRUN rm /a\nCOPY a /a\nRUN cat /a\n"
    msgs = post_build(
        build_agent, context_tar({"Dockerfile": dockerfile, "a": "content-a\n"}), "nocache=1&t=api-dup"
    )
    assert not errors(msgs), errors(msgs)
    assert "content-a\n" in stream_text(msgs)
    layers = inspect(build_agent, "api-dup")["RootFS"]["Layers"]
    assert len(layers) == len(set(layers)) + 1  # really a repeated layer


def test_a_client_that_goes_away_stops_the_running_step(build_agent: Agent) -> None:  # noqa: F811
    import socket
    import time

    def containers() -> set[str]:
        return set(build_agent.docker("ps", "-aq").stdout.split())

    before = containers()  # (a failed RUN of another test keeps its container, as in Docker)
    body = context_tar({"Dockerfile": f"FROM {BB}\nRUN sleep 600\n"})
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(build_agent.socket_path))
    head = "POST /v1.44/build?t=api-gone HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
    sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    seen = b""
    while b"Running in" not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    assert len(containers() - before) == 1  # the RUN container
    sock.close()  # Ctrl-C in the CLI
    deadline = time.monotonic() + 120  # a hang guard, far below the command's 600 s
    while containers() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers() - before == set()
    assert build_agent.request("GET", "/v1.44/images/api-gone/json")[0] == 404
