"""`pymachine build`: flag handling, the stream, and what docker-py really sends for those flags (checked
against a loopback HTTP server on a unix socket that records the request, not a VM)."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import socketserver
import tarfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import docker
import pytest

from pymachine.app.cli import container_build, container_cmd
from pymachine.hostvm import images_io
from pymachine.hostvm.errors import PymachineError, UsageError
from pymachine.hostvm.progress import BuildOutput


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pymachine/busybox\nARG GREETING\nRUN echo $GREETING\n")
    (ctx / "hello.txt").write_text("hi\n")
    return ctx


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    container_cmd.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_flags_parse_top_level_and_under_container(context: Path) -> None:
    argv = [
        "-t",
        "app:1",
        "-t",
        "app:latest",
        "--build-arg",
        "A=1",
        "--target",
        "s",
        "--no-cache",
        str(context),
    ]
    for args in (_parse(["build", *argv]), _parse(["container", "build", *argv])):
        assert (args.tag, args.build_arg, args.target, args.no_cache) == (
            ["app:1", "app:latest"],
            ["A=1"],
            "s",
            True,
        )
        assert args.func is container_cmd._build


def test_build_request(context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    req = container_build.build_request(
        "ctx",
        ["app:1", "app:2"],
        "other.Dockerfile",
        ["A=x=y", "B=", "FROM_ENV", "UNSET"],
        "stage",
        True,
        environ={"FROM_ENV": "env-value"},
    )
    assert req == {
        "path": str(context),
        "decode": True,
        "rm": True,
        "nocache": True,
        "buildargs": {"A": "x=y", "B": "", "FROM_ENV": "env-value"},  # UNSET is left out, as docker does
        "dockerfile": str(tmp_path / "other.Dockerfile"),  # -f is relative to the cwd, not the context
        "target": "stage",
        "tag": "app:1",
    }
    bare = container_build.build_request(str(context), [], None, [], None, False, environ={})
    assert bare == {"path": str(context), "decode": True, "rm": True, "nocache": False, "buildargs": {}}


@pytest.mark.parametrize(
    ("path", "tags", "args", "match"),
    [
        ("missing", [], [], "is not a folder"),
        (None, ["Bad:Tag!"], [], "invalid tag"),
        (None, [], ["=v"], "has no name"),
    ],
)
def test_build_request_rejects(
    context: Path, path: str | None, tags: list[str], args: list[str], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        container_build.build_request(path or str(context), tags, None, args, None, False, environ={})


@pytest.mark.parametrize(
    ("ref", "split"),
    [
        ("app", ("app", "latest")),
        ("app:1.2", ("app", "1.2")),
        ("localhost:5000/app", ("localhost:5000/app", "latest")),
        ("localhost:5000/app:v2", ("localhost:5000/app", "v2")),
    ],
)
def test_split_tag(ref: str, split: tuple[str, str]) -> None:
    parsed = images_io.parse_reference(ref)
    assert (parsed.repository, parsed.tag or "latest") == split


def test_follow_build_streams_and_returns_the_id() -> None:
    seen: list[object] = []
    events = [
        {"stream": "Step 1/2 : FROM pymachine/busybox\n"},
        {"status": "loading pymachine/busybox"},
        {"aux": {"ID": "sha256:abc"}},
        {"stream": "Successfully built abc\n"},
    ]
    assert images_io.follow_build(iter(events), seen.append) == "sha256:abc"
    assert seen == [
        BuildOutput("Step 1/2 : FROM pymachine/busybox\n"),
        "loading pymachine/busybox",
        BuildOutput("Successfully built abc\n"),
    ]


@pytest.mark.parametrize(
    "event",
    [
        {
            "errorDetail": {
                "code": 1,
                "message": "The command '/bin/sh -c false' returned a non-zero code: 1",
            },
            "error": "The command '/bin/sh -c false' returned a non-zero code: 1",
        },
        {"errorDetail": {"message": "The command '/bin/sh -c false' returned a non-zero code: 1"}},
    ],
)
def test_follow_build_turns_errors_into_pymachine_errors(event: dict[str, Any]) -> None:
    out: list[object] = []
    with pytest.raises(PymachineError, match="build failed: The command '/bin/sh -c false' returned") as info:
        images_io.follow_build(iter([{"stream": "Step 1/1 : RUN false\n"}, event]), out.append)
    assert out == [BuildOutput("Step 1/1 : RUN false\n")] and info.value.hint


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    requests: list[dict[str, Any]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        body = b""
        if self.headers.get("Transfer-Encoding") == "chunked":
            while (size := int(self.rfile.readline().strip(), 16)) != 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(  # type: ignore[attr-defined]
            {"path": url.path, "query": urllib.parse.parse_qs(url.query), "body": body}
        )
        if url.path.endswith("/build"):
            lines = [
                {"stream": "Step 1/3 : FROM pymachine/busybox\n"},
                {"aux": {"ID": "sha256:" + "f" * 64}},
                {"stream": "Successfully built ffffffffffff\n"},
                {"stream": "Successfully tagged app:1\n"},
            ]
            # chunked, one message a chunk, as the engine streams it (docker-py reads a stream only so)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for x in lines:
                data = json.dumps(x).encode() + b"\r\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_run_sends_the_flags_docker_py_style(context: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "e.sock"
    server = _Engine(str(sock), _Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GREETING", "hello")
    try:
        dc = docker.DockerClient(base_url=f"unix://{sock}", version="1.44")
        args = _parse(
            [
                "build",
                "-t",
                "app:1",
                "-t",
                "localhost:5000/app:v2",
                "--build-arg",
                "GREETING",
                "--target",
                "final",
                "--no-cache",
                str(context),
            ]
        )
        assert container_build.run(args, lambda: dc, print) == 0
    finally:
        server.shutdown()
        server.server_close()
    build, tag = server.requests
    assert build["path"].endswith("/build")
    q = build["query"]
    assert q["t"] == ["app:1"] and q["target"] == ["final"] and q["nocache"] == ["True"]
    assert json.loads(q["buildargs"][0]) == {"GREETING": "hello"}
    with tarfile.open(fileobj=io.BytesIO(build["body"])) as tar:
        names = tar.getnames()
    assert {"Dockerfile", "hello.txt"} <= set(names)
    assert tag["path"].endswith("/images/sha256:" + "f" * 64 + "/tag")
    assert (tag["query"]["repo"], tag["query"]["tag"]) == (["localhost:5000/app"], ["v2"])
    out = capsys.readouterr().out
    assert "Step 1/3 : FROM pymachine/busybox\n" in out
    assert out.endswith("Successfully tagged app:1\nSuccessfully tagged localhost:5000/app:v2\n")
