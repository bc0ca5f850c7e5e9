"""The host ↔ guest port protocol (contracts §4) through the real HTTP server: hello + resync, a start
waits for the ack of each add, a refused ack fails it naming the port, no subscriber means no wait."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from pymachine_agent import protocol
from pymachine_agent.api import system
from pymachine_agent.api.server import ApiServer, Router
from pymachine_agent.events import EventBus, PortAckError, PortBroker
from pymachine_agent.shares import Shares


class _Eng:
    def __init__(self) -> None:
        self.events = EventBus()
        self.ports = PortBroker(ack_timeout=5)


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    eng = _Eng()
    router = Router()
    system.register(router, eng, eng.events, eng.ports, None, Shares(None))  # type: ignore[arg-type]
    srv = ApiServer(router, tmp_path / "a.sock")
    srv.start()
    yield eng, srv
    srv.stop()


class Subscriber:
    """A minimal host agent: reads the JSON-lines stream in a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.sock.sendall(b"GET /pymachine/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        self.f = self.sock.makefile("rb")
        assert self.f.readline().startswith(b"HTTP/1.1 200")
        while self.f.readline() != b"\r\n":
            pass
        self.lines: list[dict] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            size = self.f.readline()
            if not size:
                return
            n = int(size.strip(), 16)
            if n == 0:
                return
            data = self.f.read(n)
            self.f.readline()
            with self.cv:
                self.lines.append(json.loads(data))
                self.cv.notify_all()

    def wait_for(self, pred, timeout: float = 10) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no matching event in {self.lines}"
                self.cv.wait(left)

    def close(self) -> None:
        self.sock.close()


def _post_ack(path: Path, body: dict) -> int:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    data = json.dumps(body).encode()
    s.sendall(
        b"POST /pymachine/v1/ports/ack HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data
    )
    status = int(s.makefile("rb").readline().split()[1])
    s.close()
    return status


def _add(cid: str, port: int) -> dict:
    return {"container": cid, "proto": "tcp", "host_ip": "127.0.0.1", "host_port": port, "guest_port": port}


def test_info_reports_checksum(served) -> None:  # type: ignore[no-untyped-def]
    _, srv = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(srv.socket_path))
    s.sendall(b"GET /pymachine/v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = s.makefile("rb").read()
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body == {
        "protocol": protocol.PROTOCOL_VERSION,
        "agent_version": protocol.AGENT_VERSION,
        "agent_checksum": protocol.source_checksum(),
        "shares": None,  # this agent has no share list (bind sources are guest paths)
    }


def test_without_subscriber_add_does_not_wait(served) -> None:  # type: ignore[no-untyped-def]
    eng, _ = served
    done = threading.Event()
    threading.Thread(target=lambda: (eng.ports.add(_add("c1", 8080)), done.set()), daemon=True).start()
    assert done.wait(2), "add blocked although no host agent is subscribed"


def test_slow_ack_delays_the_add_and_resync_replays(served) -> None:  # type: ignore[no-untyped-def]
    eng, srv = served
    sub = Subscriber(srv.socket_path)
    sub.wait_for(lambda e: e["type"] == "hello")
    returned = threading.Event()
    errors: list[Exception] = []

    def start() -> None:
        try:
            eng.ports.add(_add("c1", 8080))
        except Exception as exc:
            errors.append(exc)
        returned.set()

    threading.Thread(target=start, daemon=True).start()
    add = sub.wait_for(lambda e: e.get("action") == "add")
    assert add["host_port"] == 8080 and add["guest_port"] == 8080 and add["id"]
    # the host agent has not acked yet: the start must still be waiting
    assert not returned.wait(0.5)
    assert _post_ack(srv.socket_path, protocol.ack(add["id"], True)) == 200
    assert returned.wait(5) and not errors
    # a second subscriber (a reconnect) gets hello then the current port
    sub2 = Subscriber(srv.socket_path)
    first = sub2.wait_for(lambda e: e["type"] == "hello")
    resync = sub2.wait_for(lambda e: e.get("action") == "add")
    assert first["type"] == "hello" and resync["host_port"] == 8080
    eng.ports.withdraw("c1")
    gone = sub.wait_for(lambda e: e.get("action") == "remove")
    assert gone["host_port"] == 8080
    sub.close()
    sub2.close()


def test_refused_ack_fails_naming_the_port(served) -> None:  # type: ignore[no-untyped-def]
    eng, srv = served
    sub = Subscriber(srv.socket_path)
    sub.wait_for(lambda e: e["type"] == "hello")
    result: list[Exception] = []

    def start() -> None:
        try:
            eng.ports.add(_add("c2", 9090))
        except PortAckError as exc:
            result.append(exc)

    t = threading.Thread(target=start, daemon=True)
    t.start()
    add = sub.wait_for(lambda e: e.get("action") == "add")
    _post_ack(srv.socket_path, protocol.ack(add["id"], False, "host port 127.0.0.1:9090 is already in use"))
    t.join(5)
    assert result and "127.0.0.1:9090" in str(result[0])
    removed = sub.wait_for(lambda e: e.get("action") == "remove")
    assert removed["host_port"] == 9090
    assert _post_ack(srv.socket_path, {"id": "nope", "ok": True}) == 404
    assert _post_ack(srv.socket_path, {"bad": 1}) == 400
    sub.close()
