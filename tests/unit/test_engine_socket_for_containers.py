"""The engine socket a container is given (`-v /var/run/docker.sock:...`) serves Docker's API but not the host
<-> guest protocol (`/pymachine/...`): only the agent's own socket, the fast path's relay and the serial port
(the VM's own side and the host agent) speak that. The real agent and a container's view of it:
tests/privileged/test_shares_agent.py."""

from __future__ import annotations

import http.client
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import UnixHTTPConnection

from pymachine_agent.api.server import ApiServer, Router, container_socket
from pymachine_agent.runtime.spec import Mount
from pymachine_agent.shares import ENGINE_SOCKET_ALIASES, Share, Shares


def _router() -> Router:
    router = Router()
    router.add("GET", "/_ping", lambda req: req.conn.send(200, b"OK", "text/plain"))
    router.add("GET", "/pymachine/v1/info", lambda req: (200, {"protocol": 3}))
    router.add("PUT", "/pymachine/v1/shares", lambda req: (200, {"shares": []}))
    return router


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    srv = ApiServer(_router(), tmp_path / "docker.sock", tcp=("127.0.0.1", 0))
    srv.start()
    yield srv
    srv.stop()


def _get(path: Path, method: str, target: str) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(str(path), 10)
    try:
        conn.request(method, target, body=b"{}" if method != "GET" else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_both_sockets_are_private_and_beside_each_other(server: ApiServer, tmp_path: Path) -> None:
    assert (
        server.container_socket_path == tmp_path / "containers.sock" == container_socket(server.socket_path)
    )
    for path in (server.socket_path, server.container_socket_path):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)


@pytest.mark.parametrize(
    "method,target",
    [
        ("GET", "/pymachine/v1/info"),
        ("GET", "/v1.44/pymachine/v1/info"),
        ("GET", "/%70ymachine/v1/info"),  # the path is matched decoded, and so is the refusal
        ("GET", "/pymachine/v1/info/"),
        ("PUT", "/pymachine/v1/shares"),
        ("GET", "/pymachine/v1/no-such-route"),  # 403 as well: no way to list the protocol's routes
    ],
)
def test_the_containers_socket_refuses_the_host_protocol(server: ApiServer, method: str, target: str) -> None:
    status, body = _get(server.container_socket_path, method, target)
    assert status == 403, body
    assert b"served to the VM's own processes only" in body


def test_the_containers_socket_serves_dockers_api_and_the_agents_socket_both(server: ApiServer) -> None:
    assert _get(server.container_socket_path, "GET", "/v1.44/_ping") == (200, b"OK")
    assert _get(server.socket_path, "GET", "/_ping") == (200, b"OK")
    assert _get(server.socket_path, "GET", "/pymachine/v1/info") == (200, b'{"protocol": 3}\n')
    assert _get(server.socket_path, "PUT", "/pymachine/v1/shares")[0] == 200


def test_the_tcp_listener_refuses_it_too(server: ApiServer) -> None:
    """`--tcp` listens on the VM's loopback, which a `--network host` container shares."""
    host, port = server.tcp_address  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/pymachine/v1/info")
        refused = conn.getresponse()
        assert refused.status == 403 and b"VM's own processes only" in refused.read()
        conn.request("GET", "/_ping")
        assert conn.getresponse().read() == b"OK"
    finally:
        conn.close()


def test_stop_removes_both_and_a_stale_containers_socket_is_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "containers.sock"))  # a killed agent's: bound, nobody listening
    stale.close()
    srv = ApiServer(_router(), tmp_path / "docker.sock")
    srv.start()
    assert _get(srv.container_socket_path, "GET", "/_ping")[0] == 200
    srv.stop()
    assert not srv.socket_path.exists() and not srv.container_socket_path.exists()


def test_a_live_containers_socket_is_not_taken_over(server: ApiServer, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "containers.sock").symlink_to(server.container_socket_path)
    with pytest.raises(RuntimeError, match="another engine already serves"):
        ApiServer(_router(), other / "docker.sock")
    assert not (other / "docker.sock").exists()  # nothing left behind by the half-made server


@pytest.mark.parametrize("source", [*ENGINE_SOCKET_ALIASES, "/run/pm/docker.sock", "/run/pm/containers.sock"])
def test_every_name_of_the_engine_socket_binds_the_containers_one(source: str) -> None:
    shares = Shares(
        [Share("/home/u")],
        engine_socket="/run/pm/docker.sock",
        container_socket="/run/pm/containers.sock",
        is_mount=lambda p: True,
    )
    [bound] = shares.check(
        [Mount("bind", "/var/run/docker.sock", source)], [f"{source}:/var/run/docker.sock"]
    )
    assert bound.source == "/run/pm/containers.sock"
