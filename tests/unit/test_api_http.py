"""The agent's HTTP/1.1 layer over a real unix socket: version prefix, ping headers, keep-alive, chunked
request bodies, streaming responses and connection hijack with half-close."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pymachine_agent.api.http import Request
from pymachine_agent.api.server import ApiServer, Router
from pymachine_agent.api.streams import deframe, frame, pump_hijacked


class EchoSession:
    """Echoes stdin to stdout frames until stdin EOF, then ends (what `cat` in a container does)."""

    tty = False

    def __init__(self) -> None:
        self.buf: list[bytes | None] = []
        self.cv = threading.Condition()

    def write_stdin(self, data: bytes) -> None:
        with self.cv:
            self.buf.append(frame(1, data))
            self.cv.notify()

    def close_stdin(self) -> None:
        with self.cv:
            self.buf.append(None)
            self.cv.notify()

    def read(self) -> bytes | None:
        with self.cv:
            while not self.buf:
                self.cv.wait()
            return self.buf.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    from pymachine_agent.api import system

    router = Router()

    class Eng:
        pass

    eng = Eng()
    from pymachine_agent.events import EventBus, PortBroker

    eng.events = EventBus()  # type: ignore[attr-defined]
    eng.ports = PortBroker(ack_timeout=5)  # type: ignore[attr-defined]
    eng.version = lambda: {"ApiVersion": "1.44"}  # type: ignore[attr-defined]
    system.register(router, eng, eng.events, eng.ports, None, None)  # type: ignore[arg-type]

    @router.route("POST", "/echo")
    def echo(req: Request) -> tuple[int, dict]:
        return 200, {"len": len(req.body()), "sum": sum(req.body()) % 65536}

    @router.route("GET", "/images/{name:path}/json")
    def image(req: Request, name: str) -> tuple[int, dict]:
        return 200, {"name": name, "all": req.qbool("all"), "filters": req.filters()}

    @router.route("POST", "/attach")
    def attach(req: Request) -> None:
        pump_hijacked(req, EchoSession(), stdin=True)

    srv = ApiServer(router, tmp_path / "s.sock")
    srv.start()
    yield srv
    srv.stop()


def _conn(srv: ApiServer) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(srv.socket_path))
    return s


def _read_response(f) -> tuple[int, dict[str, str], bytes]:  # type: ignore[no-untyped-def]
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        return status, headers, f.read(int(headers["content-length"]))
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            n = int(f.readline().strip(), 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    return status, headers, body


def test_ping_head_and_get_carry_docker_headers(server: ApiServer) -> None:
    s = _conn(server)
    f = s.makefile("rb")
    s.sendall(b"HEAD /_ping HTTP/1.1\r\nHost: api.moby.localhost\r\n\r\n")
    status, headers, body = _read_response(f)
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.44"
    assert headers["ostype"] == "linux"
    assert headers["docker-experimental"] == "false"
    assert headers["builder-version"] == "1"
    # same connection (keep-alive), versioned GET
    s.sendall(b"GET /v1.44/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = _read_response(f)
    assert status == 200 and body == b"OK"
    s.close()


def test_version_prefix_limits_and_unknown_paths(server: ApiServer) -> None:
    s = _conn(server)
    f = s.makefile("rb")
    s.sendall(b"GET /v1.50/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = _read_response(f)
    assert status == 400 and b"client version 1.50 is too new" in body
    s.sendall(b"GET /v1.12/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = _read_response(f)
    assert status == 400 and b"too old" in body
    s.sendall(b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = _read_response(f)
    assert status == 404 and b'"message"' in body
    s.close()


def test_chunked_request_body_then_keepalive(server: ApiServer) -> None:
    payload = bytes(range(256)) * 300
    chunks = b"".join(
        f"{len(payload[i : i + 1000]):x}\r\n".encode() + payload[i : i + 1000] + b"\r\n"
        for i in range(0, len(payload), 1000)
    )
    s = _conn(server)
    f = s.makefile("rb")
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    status, _, body = _read_response(f)
    assert status == 200
    assert body.startswith(b'{"len": %d, "sum": %d}' % (len(payload), sum(payload) % 65536))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    status, _, body = _read_response(f)
    assert b'"len": 3' in body
    s.close()


def test_image_refs_with_slashes_and_both_filter_forms(server: ApiServer) -> None:
    s = _conn(server)
    f = s.makefile("rb")
    s.sendall(
        b"GET /v1.44/images/localhost:5000/a/b:tag/json?all=False&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"  # noqa: E501
        b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    _, _, body = _read_response(f)
    assert b'"name": "localhost:5000/a/b:tag"' in body and b'"all": false' in body
    assert b'"label": ["a=b"]' in body
    s.sendall(
        b"GET /images/x/json?all=1&filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D HTTP/1.1\r\n"
        b"Host: x\r\n\r\n"
    )
    _, _, body = _read_response(f)
    assert b'"all": true' in body and b'"status": ["exited"]' in body
    s.close()


def test_hijack_101_multiplexed_echo_and_half_close(server: ApiServer) -> None:
    s = _conn(server)
    f = s.makefile("rb")
    s.sendall(b"POST /attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    assert f.readline().startswith(b"HTTP/1.1 101 UPGRADED")
    headers = []
    while (line := f.readline()) != b"\r\n":
        headers.append(line)
    assert b"Content-Type: application/vnd.docker.multiplexed-stream\r\n" in headers
    s.sendall(b"hello ")
    s.sendall(b"world")
    s.shutdown(socket.SHUT_WR)  # the CLI half-closes after stdin EOF and still reads output
    out = f.read()  # until the server closes
    assert b"".join(d for _, d in deframe(out)) == b"hello world"
    assert {st for st, _ in deframe(out)} == {1}
    s.close()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # a file left behind by a crashed agent
    srv = ApiServer(Router(), path)
    srv.start()
    try:
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        srv.stop()
