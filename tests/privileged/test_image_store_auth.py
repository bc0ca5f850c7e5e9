"""Registry authentication: Docker's bearer-token flow against the real docker-registry (token auth with
JWTs from a local token service), and credentials never following a redirect to another host."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.registry import busybox_archive, local_registry

from pymachine_agent.images import ImageStore, RegistryError
from pymachine_agent.images.regclient import RegistryClient

BB = "pymachine/busybox:latest"
ALICE = {"username": "alice", "password": "tok3n-pw"}


def test_bearer_token_push_and_pull(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    store.load(io.BytesIO(busybox_archive()))
    with local_registry(tmp_path / "reg", users={"alice": ALICE["password"]}, token_auth=True) as reg:
        ref = f"{reg.host}/team/bb:1"
        store.tag(BB, ref)
        with pytest.raises(RegistryError) as err:
            store.push(ref)  # anonymous: the token service refuses
        assert err.value.status == 401
        digest = store.push(ref, auth=ALICE)
        assert (True, "repository:team/bb:pull,push") in reg.tokens.requests
        fresh = ImageStore(tmp_path / "fresh")
        with pytest.raises(RegistryError) as err:
            fresh.pull(ref, auth={"username": "alice", "password": "nope"})
        assert err.value.status == 401
        assert fresh.pull(ref, auth=ALICE) == store.resolve(BB)
        assert (True, "repository:team/bb:pull") in reg.tokens.requests
        assert fresh.inspect(ref)["RepoDigests"] == [f"{reg.host}/team/bb@{digest}"]


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    redirect_to = ""

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/v2/"):
            self.send_response(307)
            self.send_header("Location", type(self).redirect_to + self.path.rsplit("/", 1)[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"blob-bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    started = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
    yield started[0].server_address[1], started[1].server_address[1]
    for srv in started:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("cross_host", [True, False])
def test_authorization_is_dropped_on_a_cross_host_redirect(
    servers: tuple[int, int], cross_host: bool
) -> None:
    registry_port, cdn_port = servers
    _Recorder.seen = []
    # "localhost" vs "127.0.0.1" is another host to HTTP even though both are loopback
    _Recorder.redirect_to = (
        f"http://localhost:{cdn_port}/cdn/" if cross_host else f"http://127.0.0.1:{registry_port}/cdn/"
    )
    client = RegistryClient(f"127.0.0.1:{registry_port}", insecure=True, auth={"registrytoken": "T0K"})
    resp = client.request("GET", "/v2/x/blobs/sha256:abc", "repository:x:pull")
    assert resp.read() == b"blob-bytes"
    assert _Recorder.seen[0] == ("/v2/x/blobs/sha256:abc", "Bearer T0K")
    assert _Recorder.seen[1] == ("/cdn/sha256:abc", None if cross_host else "Bearer T0K")


@pytest.mark.parametrize("token_auth", [False, True])
def test_login_checks_credentials(tmp_path: Path, token_auth: bool) -> None:
    store = ImageStore(tmp_path / "s")
    with local_registry(tmp_path / "reg", users={"alice": ALICE["password"]}, token_auth=token_auth) as reg:
        ok = store.login({**ALICE, "serveraddress": f"http://{reg.host}/"})
        assert ok["Status"] == "Login Succeeded"
        with pytest.raises(RegistryError) as err:
            store.login({"username": "alice", "password": "bad", "serveraddress": reg.host})
        assert err.value.status == 401
