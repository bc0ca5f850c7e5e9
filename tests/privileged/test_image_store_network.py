"""A registry connection that breaks in the middle of a layer: a clear RegistryError, nothing kept.
(The real docker-registry cannot be made to drop a connection on cue, so this one HTTP server plays it.)"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.registry import file, image_config, tar_bytes

from pymachine_agent.images import ImageError, ImageStore

LAYER = gzip.compress(tar_bytes([file("big", bytes(range(256)) * 4096)]), mtime=0)
CONFIG = image_config([LAYER])


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": _digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": _digest(LAYER),
                "size": len(LAYER),
            }
        ],
    }
).encode()


class _Flaky(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.endswith("/manifests/1"):
            body, ctype = MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"
        elif self.path.endswith(_digest(CONFIG)):
            body, ctype = CONFIG, "application/octet-stream"
        elif self.path.endswith(_digest(LAYER)):
            self.send_response(200)
            self.send_header("Content-Length", str(len(LAYER)))
            self.end_headers()
            self.wfile.write(LAYER[: len(LAYER) // 2])  # then the connection drops
            self.wfile.flush()
            self.close_connection = True
            return
        else:
            body, ctype = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_connection_dropped_mid_layer(flaky: str, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    # http.client reports a short body as EOF: the descriptor's size tells it apart from a bad digest
    with pytest.raises(ImageError, match="ended after .* of its .* bytes: the transfer was cut short"):
        store.pull(f"{flaky}/t:1")
    assert not store.exists(f"{flaky}/t:1")
    assert list((store.root / "layers").iterdir()) == [] and list((store.root / "tmp").iterdir()) == []
