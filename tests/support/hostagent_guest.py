"""A stand-in for the guest agent's host protocol (docs/contracts.md §4) on a unix socket, for tests of the
host agent against a local sshd. The port bookkeeping is the guest agent's own `PortBroker` (it really waits
for acks);
only the container start is replaced by `POST /test/publish` (publish ports as a start would, returning when
the broker returns) and `POST /test/withdraw`. `GET /_ping` answers like the engine.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from pymachine_agent import protocol
from pymachine_agent.events import PortAckError, PortBroker


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    broker: PortBroker


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        broker = self.server.broker
        if self.path == "/_ping":
            data = b"OK"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
        elif self.path == protocol.API_PREFIX + "/info":
            self._reply(200, protocol.info())
        elif self.path == protocol.API_PREFIX + "/events":
            q, first = broker.subscribe()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for line in first:
                    self._chunk(line)
                for event in broker.stream(q, keepalive=0.5):
                    if event is not None:
                        self._chunk(event)
                    else:
                        self._chunk(None)
            except OSError:
                pass
            finally:
                broker.unsubscribe(q)
                self.close_connection = True
        else:
            self._reply(404, {"message": "not found"})

    def _chunk(self, obj: object) -> None:
        # A keep-alive is an empty line: it proves the peer is still there without being an event.
        data = (json.dumps(obj) if obj is not None else "").encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        broker = self.server.broker
        body = self._body()
        if self.path == protocol.API_PREFIX + "/ports/ack":
            event_id, ok, error = protocol.parse_ack(body)
            found = broker.ack(event_id, ok, error)
            self._reply(200 if found else 404, {"id": event_id})
        elif self.path == "/test/publish":
            try:
                # As a container start does: announce each port, waiting for the host agent's ack.
                for proto, host_ip, host_port, guest_port in body["ports"]:
                    broker.add(
                        {
                            "container": body["container"],
                            "proto": proto,
                            "host_ip": host_ip,
                            "host_port": host_port,
                            "guest_port": guest_port,
                        }
                    )
                self._reply(201, {"ok": True})
            except PortAckError as exc:
                self._reply(500, {"message": str(exc)})
        elif self.path == "/test/withdraw":
            broker.withdraw(body["container"])
            self._reply(200, {"ok": True})
        else:
            self._reply(404, {"message": "not found"})


class FakeGuestProtocol:
    """Serve §4 on `path` until `stop()`."""

    def __init__(self, path: Path, ack_timeout: float = 10.0) -> None:
        self.path = path
        if path.exists():
            path.unlink()
        self.server = _Server(str(path), _Handler)
        self.server.broker = PortBroker(ack_timeout=ack_timeout)
        os.chmod(path, 0o600)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def broker(self) -> PortBroker:
        return self.server.broker

    def start(self) -> FakeGuestProtocol:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
