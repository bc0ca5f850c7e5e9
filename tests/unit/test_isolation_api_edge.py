"""Issue 12, point 8 and HostIp (point 5): the pure parts of the API edge — request-head and framing
parsers, the deadline reader, the JSON body type checker, HostIp parsing and the address ps/inspect show."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from pymachine.hostvm.hostagent import ports as host_ports
from pymachine_agent.__main__ import default_host_ip, read_settings
from pymachine_agent.api import bodies, wire
from pymachine_agent.api.http import Request
from pymachine_agent.api.server import ApiServer, Router
from pymachine_agent.api.wire import ProtocolError, ReadTimeout
from pymachine_agent.dockerspec import BadParameter, port_specs
from pymachine_agent.network.model import EndpointInfo, InvalidParameterError, PortSpec, PublishedPort
from pymachine_agent.network.ports import parse_host_ip

# -- request head ------------------------------------------------------------------------------------


def test_request_line_parses() -> None:
    assert wire.parse_request_line(b"GET /v1.44/_ping?x=1 HTTP/1.1\r\n") == (
        "GET",
        "/v1.44/_ping?x=1",
        (1, 1),
    )
    assert wire.parse_request_line(b"HEAD /_ping HTTP/1.0\n")[2] == (1, 0)


@pytest.mark.parametrize(
    "line,status",
    [
        (b"GARBAGE\r\n", 400),
        (b"GET /_ping\r\n", 400),
        (b"GET  /_ping HTTP/1.1\r\n", 400),
        (b"G(T /_ping HTTP/1.1\r\n", 400),
        (b"GET _ping HTTP/1.1\r\n", 400),
        (b"GET /a\x01b HTTP/1.1\r\n", 400),
        (b"GET /_ping HTTP/1.x\r\n", 400),
        (b"GET /_ping HTTP/9.9\r\n", 505),
        (b"GET /_ping HTTP/2.0\r\n", 505),
        (b"GET /" + b"a" * wire.MAX_REQUEST_LINE, 414),
        (b"GET /_pi", 400),  # cut off by EOF
    ],
)
def test_bad_request_lines(line: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        wire.parse_request_line(line)
    assert err.value.status == status


@pytest.mark.parametrize(
    "line", [b"Host docker\r\n", b"Host : docker\r\n", b" folded\r\n", b"X-A: a\x00b\r\n"]
)
def test_bad_header_lines(line: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        wire.parse_header_line(line)
    assert err.value.status == 400


def test_header_line_parses() -> None:
    assert wire.parse_header_line(b"X-Registry-Auth:  e30= \r\n") == ("X-Registry-Auth", "e30=")


@pytest.mark.parametrize(
    "values,expected",
    [([], None), (["0"], 0), (["12"], 12), (["12", "12"], 12), ([str(2**63 - 1)], 2**63 - 1)],
)
def test_content_length(values: list[str], expected: int | None) -> None:
    assert wire.content_length(values) == expected


@pytest.mark.parametrize(
    "values", [["abc"], ["-5"], ["+5"], ["1e20"], [str(10**20)], [str(2**63)], ["1", "2"], ["١"]]
)
def test_bad_content_length(values: list[str]) -> None:
    with pytest.raises(ProtocolError) as err:
        wire.content_length(values)
    assert err.value.status == 400


def test_transfer_encoding() -> None:
    assert wire.is_chunked([], False) is False
    assert wire.is_chunked(["Chunked"], False) is True
    with pytest.raises(ProtocolError) as err:
        wire.is_chunked(["chunked"], True)  # with a Content-Length: smuggling
    assert err.value.status == 400
    for te in (["gzip"], ["gzip, chunked"], ["chunked", "chunked"]):
        with pytest.raises(ProtocolError) as err:
            wire.is_chunked(te, False)
        assert err.value.status == 501


@pytest.mark.parametrize("line,size", [(b"0\r\n", 0), (b"1a\r\n", 26), (b"FF;ext=1\r\n", 255)])
def test_chunk_size(line: bytes, size: int) -> None:
    assert wire.chunk_size(line) == size


@pytest.mark.parametrize(
    "line", [b"zz\r\n", b"\r\n", b"-1\r\n", b"ffffffffffffffff\r\n", b"1" * 17 + b"\r\n", b"10"]
)
def test_bad_chunk_size(line: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        wire.chunk_size(line)
    assert err.value.status == 400


# -- the reader's deadline -----------------------------------------------------------------------------


def test_a_dribbling_peer_cannot_stretch_the_deadline() -> None:
    a, b = socket.socketpair()
    stop = threading.Event()

    def dribble() -> None:
        while not stop.is_set():
            try:
                b.send(b"x")
            except OSError:
                return
            time.sleep(0.05)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        reader = wire.Reader(a)
        start = time.monotonic()
        with pytest.raises(ReadTimeout):
            reader.readline(1 << 20, time.monotonic() + 0.5)
        assert time.monotonic() - start < 5  # bounded by the deadline, not by the trickle
    finally:
        stop.set()
        a.close()
        b.close()


def test_reader_lines_and_reads() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"one\r\ntwo\nrest")
        b.shutdown(socket.SHUT_WR)
        reader = wire.Reader(a)
        assert reader.readline(100, None) == b"one\r\n"
        assert reader.readline(2, None) == b"tw"  # the limit: no newline tells the caller
        assert reader.readline(100, None) == b"o\n"
        assert reader.read(2) == b"re"
        assert reader.readline(100, None) == b"st"  # EOF
        assert reader.read(10) == b""


# -- JSON body types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,field",
    [
        ({"Image": 5}, "Image"),
        ({"Env": 5}, "Env"),
        ({"Env": ["A=1", 2]}, "Env[1]"),
        ({"Cmd": {}}, "Cmd"),
        ({"Cmd": ["a", 1]}, "Cmd"),
        ({"Tty": "yes"}, "Tty"),
        ({"StopTimeout": True}, "StopTimeout"),  # a bool is not an integer, as in Go
        ({"StopTimeout": 1.5}, "StopTimeout"),
        ({"HostConfig": []}, "HostConfig"),
        ({"HostConfig": {"PortBindings": {"80/tcp": {"HostIp": ""}}}}, "HostConfig.PortBindings['80/tcp']"),
        ({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 80}]}}}, "HostPort"),
        ({"HostConfig": {"Mounts": [{"Target": 5}]}}, "HostConfig.Mounts[0].Target"),
        ({"HostConfig": {"Sysctls": {"a": None}}}, "Sysctls"),
        ({"Labels": []}, "Labels"),
        (None, "the body"),
        ([], "the body"),
    ],
)
def test_create_body_type_errors_name_the_field(body: object, field: str) -> None:
    with pytest.raises(bodies.BodyError) as err:
        bodies.check(body, bodies.CONTAINER_CREATE)
    assert field in str(err.value)


def test_well_typed_bodies_pass() -> None:
    create = {
        "Image": "busybox",
        "Cmd": "echo hi",
        "Entrypoint": ["sh", "-c"],
        "Env": ["A=1"],
        "Labels": {"a": "b"},
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/data": {}},
        "StopTimeout": None,
        "Unknown": {"anything": [1]},  # unknown fields pass, as in Go
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": None},
            "Memory": 0,
            "CapAdd": "NET_ADMIN",
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Init": None,
        },
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"], "IPAMConfig": None}}},
    }
    bodies.check(create, bodies.CONTAINER_CREATE)
    bodies.check({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"}]}}, bodies.NETWORK_CREATE)
    bodies.check({"Cmd": ["ls"], "AttachStdout": True}, bodies.EXEC_CREATE)


# -- JSON body size over a real socket -----------------------------------------------------------------------


def _roundtrip(path: Path, raw: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    with s:
        try:
            s.sendall(raw)
        except OSError:
            pass
        data = b""
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
        return data


def test_a_chunked_json_body_over_the_limit_is_413(tmp_path: Path) -> None:
    router = Router()

    @router.route("POST", "/echo")
    def echo(req: Request) -> tuple[int, dict]:
        return 200, {"len": len(json.dumps(req.json()))}

    srv = ApiServer(router, tmp_path / "s.sock")
    srv.start()
    try:
        piece = b'"' + b"a" * 1_000_000 + b'"'
        chunks = b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
        answer = _roundtrip(
            srv.socket_path, b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        assert answer.startswith(b"HTTP/1.1 413 ")
        small = _roundtrip(
            srv.socket_path, b"POST /echo HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert small.startswith(b"HTTP/1.1 200 ")
    finally:
        srv.stop()


# -- HostIp and the address shown ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("", ""), ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("[10.0.0.1]", "10.0.0.1")],
)
def test_host_ip_literals(text: str, expected: str) -> None:
    assert parse_host_ip(text) == expected


@pytest.mark.parametrize(
    "text", ["0", "localhost", "example.com", "1.2.3", "127.1", "0x7f000001", "::1", "::"]
)
def test_host_ip_names_and_shorthands_are_refused(text: str) -> None:
    with pytest.raises(InvalidParameterError):
        parse_host_ip(text)
    with pytest.raises(BadParameter, match="80/tcp"):
        port_specs({"80/tcp": [{"HostIp": text, "HostPort": "8080"}]})


def test_port_specs_keep_valid_bindings_and_refuse_out_of_range_ports() -> None:
    assert port_specs({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": None}) == [
        PortSpec(80, "tcp", 8080, "127.0.0.1"),
        PortSpec(53, "udp", 0, ""),
    ]
    for bindings in ({"80/tcp": [{"HostPort": "70000"}]}, {"0/tcp": None}, {"99999/tcp": None}):
        with pytest.raises(BadParameter):
            port_specs(bindings)


def test_the_default_host_ip_comes_from_the_machine_settings(tmp_path: Path) -> None:
    assert default_host_ip({}) == ""  # a test or ssh-provisioned engine: Docker's 0.0.0.0 is shown
    assert default_host_ip({"machine": "m"}) == host_ports.DEFAULT_HOST_IP  # a seed older than the setting
    assert default_host_ip({"machine": "m", "default_host_ip": "0.0.0.0"}) == "0.0.0.0"
    (tmp_path / "agent.json").write_text(json.dumps({"default_host_ip": "localhost"}))
    with pytest.raises(ValueError, match="default_host_ip"):
        read_settings(tmp_path / "agent.json")
    (tmp_path / "agent.json").write_text(json.dumps({"api_timeouts": {"idle": -1}}))
    with pytest.raises(ValueError, match="api_timeouts"):
        read_settings(tmp_path / "agent.json")


def test_inspect_shows_the_recorded_address() -> None:
    def info(host_ip: str) -> dict:
        port = PublishedPort("a" * 64, "tcp", host_ip, 8080, "172.17.0.2", 80)
        return EndpointInfo("a" * 64, "bridge", "", "h", "", "", ports=[port]).network_settings()["Ports"]

    assert info("127.0.0.1") == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert info("") == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}


@pytest.mark.parametrize("value", ["0", "my-host", "1.2.3"])
def test_the_host_agent_binds_ip_literals_only(value: str) -> None:
    event = {"type": "port", "action": "add", "id": "1", "container": "c", "proto": "tcp", "host_port": 8080}
    with pytest.raises(host_ports.BadPortEvent):
        host_ports.parse_event({**event, "host_ip": value})
    assert host_ports.parse_event({**event, "host_ip": ""}).rule.host_ip == "127.0.0.1"
    assert host_ports.parse_event({**event, "host_ip": "0.0.0.0"}).rule.host_ip == "0.0.0.0"
