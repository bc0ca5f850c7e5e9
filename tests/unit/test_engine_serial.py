"""The engine socket's serial path (issue 17): the frames and the multiplexer both ends share
(pymachine_agent/serialmux.py), over a socketpair standing in for the virtio-serial port; then the guest's
port server (api/serialport.py, the real API handler) against the host's side (hostagent/serialpath.py) over a
unix socket standing in for QEMU's. The real port is in tests/vm/test_engine_serial_vm.py."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pymachine.hostvm.hostagent import pump, serialpath
from pymachine_agent import serialmux as sm
from pymachine_agent.api.serialport import SerialPort, find_port
from pymachine_agent.api.server import Router, _make_handler, standard_headers
from pymachine_agent.api.wire import Timeouts


@pytest.fixture(autouse=True)
def _serial_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serial path is off unless PYMACHINE_ENGINE_PORT=on; these tests are about the path itself."""
    monkeypatch.setenv(serialpath.ENV_SWITCH, "on")


WAIT = 10.0


def wait_for(cond: Callable[[], object], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# -- the codec ----------------------------------------------------------------------------------------------


def test_frames_come_out_whole_however_the_bytes_are_cut() -> None:
    stream = sm.hello(b"n" * 8) + sm.frame(sm.OPEN, 1) + sm.frame(sm.DATA, 1, b"x" * 1000)
    stream += b"\0" * 5 + sm.frame(sm.EOF, 1)  # padding between frames is skipped
    dec = sm.Decoder()
    got: list[sm.Frame] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert [(k, c) for k, c, _ in got] == [(sm.HELLO, 0), (sm.OPEN, 1), (sm.DATA, 1), (sm.EOF, 1)]
    assert got[2][2] == b"x" * 1000
    assert dec.feed(stream) == got  # and in one piece


def test_an_unsynced_decoder_skips_everything_up_to_a_hello() -> None:
    dec = sm.Decoder()
    stale = sm.frame(sm.DATA, 7, b"y" * 100)[:50]  # a dead predecessor's partial frame
    got = dec.feed(stale + sm.frame(sm.DATA, 7, b"z") + sm.hello(b"a" * 8) + sm.frame(sm.OPEN, 2))
    assert [(k, c) for k, c, _ in got] == [(sm.HELLO, 0), (sm.OPEN, 2)]


def test_the_padding_realigns_a_synced_stream_cut_mid_frame() -> None:
    """A synced guest whose host died mid-frame: the new host's padding ends that frame, the hello follows."""
    dec = sm.Decoder()
    dec.synced = True
    partial = sm.frame(sm.DATA, 3, b"q" * sm.MAX_PAYLOAD)[:777]
    got = dec.feed(partial + sm.hello(b"b" * 8))
    assert [k for k, _, _ in got][-1] == sm.HELLO and got[-1][2][8:16] == b"b" * 8


@pytest.mark.parametrize(
    "garbage",
    [
        bytes([9]) + b"\0\0\0\1\0\0\0\0",  # an unknown type
        struct.pack(">BII", sm.DATA, 1, sm.MAX_PAYLOAD + 1),  # oversized
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_garbage_resets_then_the_next_hello_syncs_again(garbage: bytes) -> None:
    dec = sm.Decoder()
    dec.synced = True
    got = dec.feed(garbage + sm.frame(sm.DATA, 1, b"lost") + sm.hello(b"c" * 8))
    assert got[0][0] == sm.RESET
    assert [k for k, _, _ in got[1:] if k != sm.RESET] == [sm.HELLO]


# -- the multiplexer over a socketpair ----------------------------------------------------------------------


class Link:
    """A host Mux and a guest Mux joined by a socketpair, each with its reader thread."""

    def __init__(self, window: int = sm.WINDOW) -> None:
        self.h_sock, self.g_sock = socket.socketpair()
        self.accepted: list[sm.Channel] = []
        self.host = sm.Mux(self.h_sock.sendall, "host", window=window)
        self.guest = self.new_guest(window)
        threading.Thread(target=self._read, args=(self.h_sock, lambda: self.host), daemon=True).start()

    def new_guest(self, window: int = sm.WINDOW) -> sm.Mux:
        self.guest = sm.Mux(self.g_sock.sendall, "guest", on_open=self.accepted.append, window=window)
        return self.guest

    def start_guest_reader(self) -> None:
        threading.Thread(target=self._read, args=(self.g_sock, lambda: self.guest), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket, mux: Callable[[], sm.Mux]) -> None:
        try:
            while data := sock.recv(65536):
                mux().feed(data)
        except OSError:
            pass

    def up(self) -> None:
        self.start_guest_reader()
        self.host.hello()
        wait_for(lambda: self.host.synced and self.guest.synced)

    def open(self) -> tuple[sm.Channel, sm.Channel]:
        n = len(self.accepted)
        h = self.host.open(WAIT)
        wait_for(lambda: len(self.accepted) > n)
        return h, self.accepted[n]

    def close(self) -> None:
        for sock in (self.h_sock, self.g_sock):
            sock.shutdown(socket.SHUT_RDWR)  # the readers wake (EOF) before the fds go
            sock.close()


@pytest.fixture
def link() -> Iterator[Link]:
    lk = Link()
    lk.up()
    yield lk
    lk.close()


def read_all(ch: sm.Channel) -> bytes:
    out = bytearray()
    while data := ch.recv(1 << 20):
        out += data
    return bytes(out)


def test_nothing_opens_before_the_hello_is_echoed() -> None:
    lk = Link()
    with pytest.raises(sm.LinkDown):
        lk.host.open(0.1)
    lk.up()
    h, g = lk.open()
    assert h.id == g.id != 0
    lk.close()


def test_interleaved_channels_each_get_their_own_bytes(link: Link) -> None:
    pairs = [link.open() for _ in range(4)]
    blobs = [os.urandom(300_000 + i) for i in range(4)]
    received: dict[int, bytes] = {}

    def reader(i: int) -> None:
        received[i] = read_all(pairs[i][1])

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in readers:
        t.start()

    def writer(i: int) -> None:
        pairs[i][0].sendall(blobs[i])
        pairs[i][0].shutdown_write()

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in writers:
        t.start()
    for t in writers + readers:
        t.join(WAIT)
    assert all(received[i] == blobs[i] for i in range(4))


def test_eof_one_way_while_the_other_flows(link: Link) -> None:
    """An attach: the client half-closes its stdin, the container's output goes on."""
    h, g = link.open()
    h.sendall(b"stdin")
    h.shutdown_write()
    assert read_all(g) == b"stdin"  # the guest saw the EOF
    g.sendall(b"still talking " * 10_000)
    g.shutdown_write()
    assert read_all(h) == b"still talking " * 10_000
    h.close()
    wait_for(lambda: g.remote_closed and not link.guest.channels and not link.host.channels)
    with pytest.raises(BrokenPipeError):
        g.sendall(b"gone")


def test_a_stalled_channel_holds_only_itself() -> None:
    """Credit exhaustion: a reader that stops (`logs -f` nobody reads) stalls its sender at the window; a
    load on another channel flows past it; the stalled one resumes when read (credit refilled)."""
    lk = Link(window=64 * 1024)
    lk.up()
    (h_slow, g_slow), (h_load, g_load) = lk.open(), lk.open()
    slow_done = threading.Event()

    def slow_writer() -> None:
        g_slow.sendall(b"l" * 200_000)
        slow_done.set()

    threading.Thread(target=slow_writer, daemon=True).start()
    wait_for(lambda: g_slow.credit == 0 and h_slow.buffered == 64 * 1024)
    time.sleep(0.2)
    assert not slow_done.is_set() and h_slow.buffered == 64 * 1024  # no more than the window in flight
    blob = os.urandom(500_000)
    t = threading.Thread(target=lambda: (h_load.sendall(blob), h_load.shutdown_write()))
    t.start()
    assert read_all(g_load) == blob
    t.join(WAIT)
    assert not slow_done.is_set()
    got = b""
    while len(got) < 200_000:
        got += h_slow.recv(65536)
    assert got == b"l" * 200_000 and slow_done.wait(WAIT)
    lk.close()


def test_data_beyond_the_credit_resets_the_link_not_the_process(link: Link) -> None:
    h, g = link.open()
    for _ in range(sm.WINDOW // sm.MAX_PAYLOAD + 2):  # a host that ignores its credit
        link.h_sock.sendall(sm.frame(sm.DATA, h.id, b"\0" * sm.MAX_PAYLOAD))
    wait_for(lambda: g.dead)
    assert "beyond its credit" in link.guest.last_reset
    read_all(g)  # reads end (b"") instead of waiting: what arrived within the credit may still be read
    link.host.hello()  # the host's next hello brings the link back
    wait_for(lambda: link.host.synced and link.guest.synced)
    h2, g2 = link.open()
    h2.sendall(b"again")
    h2.shutdown_write()
    assert read_all(g2) == b"again"


def test_garbage_from_the_guest_makes_the_host_say_hello_again(link: Link) -> None:
    h, _ = link.open()
    link.g_sock.sendall(b"\xff" * 20)
    wait_for(lambda: h.dead)
    wait_for(lambda: link.host.synced and link.guest.synced)  # re-hello'd by itself
    h2, g2 = link.open()
    g2.sendall(b"ok")
    g2.shutdown_write()
    assert read_all(h2) == b"ok"


def test_a_check_keeps_a_live_session_and_a_new_guest_drops_the_old_channels(link: Link) -> None:
    h, g = link.open()
    link.host.check()  # the same guest agent: nothing is dropped
    time.sleep(0.2)
    g.sendall(b"kept")
    g.shutdown_write()
    assert read_all(h) == b"kept" and not h.dead
    h_old, _ = link.open()
    link.new_guest()  # the guest agent restarted: a new Mux, unsynced, on the same port
    link.host.check()
    wait_for(lambda: h_old.dead)
    h_new, g_new = link.open()
    h_new.sendall(b"fresh")
    h_new.shutdown_write()
    assert read_all(g_new) == b"fresh"


# -- the guest's port server and the host's path, end to end ------------------------------------------------


def api_handler():  # type: ignore[no-untyped-def]
    router = Router()
    router.add("GET", "/_ping", lambda req: req.conn.send(200, b"OK", "text/plain"))
    router.add("GET", "/pymachine/v1/info", lambda req: (200, {"protocol": 3}))

    def echo(req):  # type: ignore[no-untyped-def]
        body = req.body()
        req.conn.send(200, body, "application/octet-stream")

    router.add("POST", "/echo", echo)
    return _make_handler(router, standard_headers(), Timeouts())


class FakeQemu:
    """A unix socket like QEMU's chardev server: one client at a time, its stream given to the guest's fd."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.port = SerialPort(api_handler())
        self.conn: socket.socket | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self.conn = conn
        self.port.start(fd=conn.fileno())

    def close(self) -> None:
        self.port.close()  # the reader stops before its fd is closed (and its number reused)
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def http(ch: object, request: bytes) -> bytes:
    a, b = socket.socketpair()
    pump.splice(b, ch, name="t", hold_after_upgrade=True)  # type: ignore[arg-type]
    a.sendall(request)
    a.shutdown(socket.SHUT_WR)
    out = b""
    while data := a.recv(65536):
        out += data
    a.close()
    return out


def test_docker_sock_connections_are_served_by_the_api_handler(tmp_path: Path) -> None:
    qemu = FakeQemu(tmp_path / "engine.port")
    events: list[dict] = []
    path = serialpath.SerialPath(lambda **kw: events.append(kw))
    path.enable(tmp_path / "engine.port")
    wait_for(lambda: path.up)
    assert {"serial": "up"} in events
    ch = path.open()
    assert ch is not None
    assert http(ch, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    # only the host reaches the port: it speaks the host <-> guest protocol, as the agent's own socket does
    info = http(path.open(), b"GET /pymachine/v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
    assert info.startswith(b"HTTP/1.1 200 ") and info.endswith(b'{"protocol": 3}\n'), info
    body = os.urandom(3 * 1024 * 1024)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    reply = http(path.open(), head + body)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(body)
    assert path.snapshot()["connections"] == 3 and qemu.port.served == 3
    wait_for(lambda: not path.mux.channels)  # type: ignore[union-attr]
    path.stop()
    qemu.close()


def test_no_port_socket_means_no_serial_path(tmp_path: Path) -> None:
    path = serialpath.SerialPath()
    path.enable(tmp_path / "missing.port")
    time.sleep(0.3)
    assert path.open() is None and path.state == "down" and not path.up
    path.stop()


@pytest.mark.parametrize("switch", [None, "off", "no"])
def test_the_path_is_off_unless_switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch) -> None:  # type: ignore[no-untyped-def]
    if switch is None:
        monkeypatch.delenv(serialpath.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(serialpath.ENV_SWITCH, switch)
    path = serialpath.SerialPath()
    path.enable(tmp_path / "engine.port")
    assert path.state == "off" and path.open() is None


def test_the_port_is_found_by_its_name(tmp_path: Path) -> None:
    for node, name in (("vport1p1", "org.qemu.guest_agent.0"), ("vport2p1", sm.PORT_NAME)):
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(name + "\n")
    assert find_port(sysfs=tmp_path, dev=Path("/dev")) == Path("/dev/vport2p1")
    assert find_port("other", sysfs=tmp_path) is None
    assert find_port(sysfs=tmp_path / "none") is None


def test_the_agent_prefers_serial_and_the_control_op_picks_a_path(tmp_path: Path) -> None:
    """Serial first while it is up; `engine-path` via fast skips it, via ssh skips both, auto brings it back;
    status says which (`via`, and the serial path's own details)."""
    from pymachine.hostvm.hostagent.daemon import Agent

    def no_link():  # type: ignore[no-untyped-def]
        raise OSError("no SSH in this test")

    qemu = FakeQemu(tmp_path / "engine.port")
    agent = Agent("t", no_link, machine_dir=tmp_path)
    agent.serial.enable(tmp_path / "engine.port")
    try:
        wait_for(lambda: agent.engine_via == "serial")
        chan = agent._engine_channel()
        assert isinstance(chan, sm.Channel)
        chan.close()
        assert agent.status()["engine_socket"]["serial"]["connections"] == 1
        assert agent.handle({"op": "engine-path", "via": "fast"})["via"] == "ssh"  # fast not armed: SSH
        assert agent._engine_channel() is None
        assert agent.handle({"op": "engine-path", "via": "ssh"})["via"] == "ssh"
        assert agent._engine_channel() is None and agent.fastpath.forced_ssh
        assert agent.handle({"op": "engine-path", "via": "auto"})["via"] == "serial"
        assert agent.status()["engine_socket"]["via"] == "serial"
        assert not agent.handle({"op": "engine-path", "via": "tcp"})["ok"]
    finally:
        agent.serial.stop()
        qemu.close()
