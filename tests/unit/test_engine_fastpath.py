"""The engine socket's fast path (issue 17, bulk transfers): the handshake's framing
(pymachine_agent/fastpath.py), and the guest's relay (api/relay.py) against the host's handshake
(hostagent/fastpath.py) on this host's loopback: a connection proving the secret is served by the API
handler; one without it, with another secret or replayed gets not one byte and is closed. The real path
(QEMU's hostfwd, eth0) is in tests/vm/test_engine_fastpath_vm.py."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from pymachine.hostvm.hostagent import fastpath as host
from pymachine.hostvm.hostagent import qemufwd
from pymachine_agent import fastpath as wire
from pymachine_agent.api import relay as relay_mod
from pymachine_agent.api.relay import Relay
from pymachine_agent.api.server import Router, _make_handler, standard_headers
from pymachine_agent.api.wire import Timeouts

SECRET = bytes(range(32))


def test_a_hello_proves_the_secret_and_only_that_one() -> None:
    message, nonce = wire.hello(SECRET)
    assert len(message) == wire.HELLO_LEN and len(nonce) == wire.NONCE_LEN
    assert SECRET not in message  # the secret itself never travels
    assert wire.check_hello(SECRET, message) == nonce
    assert wire.check_hello(bytes(32), message) is None  # another secret
    assert wire.check_hello(SECRET, message[:-1]) is None  # short
    assert wire.check_hello(SECRET, message[:-1] + bytes([message[-1] ^ 1])) is None  # one bit off
    assert (
        wire.check_hello(SECRET, b"GET /containers/json HTTP/1.1\r\nHost: x\r\n\r\n"[: wire.HELLO_LEN])
        is None
    )
    other, other_nonce = wire.hello(SECRET)
    assert other_nonce != nonce and other != message  # fresh per connection


def test_the_relays_proof_is_bound_to_the_secret_and_the_nonce() -> None:
    message, nonce = wire.hello(SECRET)
    answer = wire.proof(SECRET, nonce)
    assert wire.check_proof(SECRET, nonce, answer)
    assert not wire.check_proof(bytes(32), nonce, answer)
    assert not wire.check_proof(SECRET, wire.hello(SECRET)[1], answer)  # another connection's
    assert answer not in message  # a hello does not contain the answer to it (no echo oracle)
    assert not wire.check_proof(SECRET, nonce, answer[:-1])


def test_the_secret_body_is_checked() -> None:
    assert wire.parse_secret({"secret": SECRET.hex()}) == SECRET
    for bad in ({}, {"secret": "ab"}, {"secret": "zz" * 32}, {"secret": 5}, [SECRET.hex()], None):
        with pytest.raises(ValueError):
            wire.parse_secret(bad)


def test_seen_nonces_refuse_a_replay_and_stay_bounded() -> None:
    seen = wire.SeenNonces(limit=3)
    assert seen.add(b"a") and not seen.add(b"a")
    for n in (b"b", b"c", b"d"):
        assert seen.add(n)
    assert not seen.add(b"d") and seen.add(b"a")  # the oldest went: bounded memory


def test_the_relays_rule_is_not_a_published_port() -> None:
    rows = [
        qemufwd.HostFwd("tcp", "127.0.0.1", 40022, "10.0.2.15", 22),
        qemufwd.HostFwd("tcp", "127.0.0.1", 41000, "10.0.2.15", wire.RELAY_GUEST_PORT),
        qemufwd.HostFwd("tcp", "127.0.0.1", 8080, "10.0.2.15", 8080),
    ]
    assert [f.host_port for f in rows if f.ours] == [8080]  # reconcile and `list` leave the relay alone
    assert [f.host_port for f in host.relay_rules(rows)] == [41000]


# -- the relay on this host's loopback ----------------------------------------------------------------------


def armed_relay(peer: str = "") -> Relay:
    router = Router()
    router.add("GET", "/_ping", lambda req: req.conn.send(200, b"OK", "text/plain"))
    router.add("GET", "/pymachine/v1/info", lambda req: (200, {"protocol": 3}))
    router.add(
        "GET",
        "/rcvbuf",
        lambda req: req.conn.send(
            200, b"%d" % req.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), "text/plain"
        ),
    )
    handler = _make_handler(router, standard_headers(), Timeouts())
    r = Relay(handler, device="lo", port=0, peer=peer)
    try:
        r.arm(SECRET)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            pytest.skip("SO_BINDTODEVICE needs CAP_NET_RAW")
        raise
    r.port = r._server.server_address[1]  # type: ignore[union-attr]
    return r


@pytest.fixture
def relay():  # type: ignore[no-untyped-def]
    r = armed_relay()
    yield r
    r.close()


def test_only_the_slirp_address_can_even_connect() -> None:
    """The socket filter drops a SYN from any other source: connect times out, the relay never sees it."""
    r = armed_relay(peer="127.0.0.2")
    try:
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", r.port), timeout=1.5)  # from 127.0.0.1
        with socket.create_connection(
            ("127.0.0.1", r.port), timeout=10, source_address=("127.0.0.2", 0)
        ) as s:
            host.handshake(s, SECRET)
            assert _get(s).startswith(b"HTTP/1.1 200 ")
        assert r.refused == 0 and r.admitted == 1
    finally:
        r.close()


def _connect(r: Relay) -> socket.socket:
    return socket.create_connection(("127.0.0.1", r.port), timeout=10)


def _get(sock: socket.socket, path: bytes = b"/_ping") -> bytes:
    """GET `path` (the relay's test router: /_ping, /pymachine/v1/info, /rcvbuf), the whole reply."""
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_connection_with_the_secret_is_served(relay: Relay) -> None:
    with _connect(relay) as sock:
        host.handshake(sock, SECRET)
        assert _get(sock).startswith(b"HTTP/1.1 200 ")
    assert relay.admitted == 1


def test_an_admitted_connection_speaks_the_host_protocol(relay: Relay) -> None:
    """It proved the host agent's secret: unlike a container's engine socket, it may use /pymachine/...."""
    with _connect(relay) as sock:
        host.handshake(sock, SECRET)
        out = _get(sock, b"/pymachine/v1/info")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b'{"protocol": 3}\n'), out


def test_an_admitted_connection_receives_into_a_large_buffer(relay: Relay) -> None:
    """From its first byte (autotuning grew it only after ~4 s of a load: docs/hostagent.md, run 14)."""
    with _connect(relay) as sock:
        host.handshake(sock, SECRET)
        out = _get(sock, b"/rcvbuf")
    size = int(out.rpartition(b"\r\n\r\n")[2])
    if os.geteuid() == 0:
        assert size >= 2 * relay_mod.RECEIVE_BUFFER, size  # the kernel doubles what it is given
    else:
        assert size >= 2 * min(relay_mod.RECEIVE_BUFFER, int(Path("/proc/sys/net/core/rmem_max").read_text()))


@pytest.mark.parametrize(
    "first",
    [
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + b" " * wire.HELLO_LEN,  # no secret
        wire.hello(bytes(32))[0],  # another secret
        wire.MAGIC + b"\0" * (wire.HELLO_LEN - len(wire.MAGIC)),
    ],
    ids=["no-secret", "wrong-secret", "zero-tag"],
)
def test_a_connection_without_the_secret_gets_nothing_and_is_closed(relay: Relay, first: bytes) -> None:
    with _connect(relay) as sock:
        sock.sendall(first)
        try:
            got = sock.recv(65536)
        except ConnectionResetError:
            got = b""
        assert got == b""  # not one byte: no API, no proof
    assert relay.refused == 1 and relay.admitted == 0


def test_a_replayed_hello_is_refused(relay: Relay) -> None:
    message, nonce = wire.hello(SECRET)
    with _connect(relay) as sock:
        sock.sendall(message)
        assert sock.recv(wire.TAG_LEN) == wire.proof(SECRET, nonce)
    with _connect(relay) as sock:
        sock.sendall(message + b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536) == b""
    assert relay.refused == 1


def test_a_new_secret_voids_the_old_one(relay: Relay) -> None:
    relay.arm(bytes(32))
    with _connect(relay) as sock, pytest.raises(ConnectionError):
        host.handshake(sock, SECRET)
    with _connect(relay) as sock:
        host.handshake(sock, bytes(32))
        assert _get(sock).startswith(b"HTTP/1.1 200 ")


def test_the_host_refuses_a_listener_that_cannot_prove_the_secret() -> None:
    """A process that took the port (QEMU gone) answers something: the host sends it no client byte."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=10) as sock:
            peer, _ = srv.accept()
            with peer:
                peer.sendall(b"\0" * wire.TAG_LEN)
                with pytest.raises(ConnectionError, match="did not prove"):
                    host.handshake(sock, SECRET)
                assert len(peer.recv(1024)) == wire.HELLO_LEN  # it got the hello, nothing else


def test_a_flood_of_idle_connections_costs_a_bounded_number_of_handshakes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from support.poll import until

    from pymachine_agent.api import relay as relay_module

    monkeypatch.setattr(relay_module, "MAX_HANDSHAKES", 2)
    r = armed_relay()
    try:
        idle = [_connect(r) for _ in range(2)]  # they never send their hello
        until(lambda: r._handshakes._value == 0, 10, "both idle connections to hold a handshake")
        with _connect(r) as sock:
            sock.sendall(wire.hello(SECRET)[0])
            assert sock.recv(65536) == b""  # closed at once, not after the 10 s hello timeout
        for conn in idle:
            conn.close()
        until(lambda: r._handshakes._value == 2, 10, "the idle connections' handshakes to end")
        with _connect(r) as sock:
            host.handshake(sock, SECRET)
            assert _get(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        r.close()


# -- connections made ahead (hostagent/fastpath.py WARM_CONNECTIONS) -----------------------------------------


class _UpLink:
    def current(self) -> object:
        return object()  # a link that is up: the secret it carried is good


def _fast_path(r: Relay) -> host.FastPath:
    fp = host.FastPath(_UpLink(), opener=None, generation=lambda: 1)  # type: ignore[arg-type]
    fp._armed, fp.state = host.Armed(r.port, SECRET, 1), "up"
    return fp


def test_a_client_takes_a_connection_made_ahead_then_it_is_made_again(relay: Relay) -> None:
    """The client's connection is already through its handshake: no new admission on the way, and the
    path makes the next one ahead for the next client."""
    from support.poll import until

    fp = _fast_path(relay)
    fp._warm_soon()
    until(lambda: len(fp._warm) == host.WARM_CONNECTIONS, 10, "connections made ahead")
    admitted, ahead = relay.admitted, [w.sock for w in fp._warm]
    channel = fp.open()
    assert channel is not None and channel.sock in ahead  # it cost the client no handshake
    assert _get(channel.sock).startswith(b"HTTP/1.1 200 ")
    until(lambda: len(fp._warm) == host.WARM_CONNECTIONS, 10, "the taken one made again")
    # the relay counts an admission after it sent its proof: the host may hold the connection a moment before
    until(lambda: relay.admitted == admitted + 1, 10, "the relay to count the one made again")
    assert fp.connections == 1
    fp.disarm("test")
    assert fp._warm == []


def test_a_stale_connection_made_ahead_is_closed_not_handed_out(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.poll import until

    fp = _fast_path(relay)
    fp._warm_soon()
    until(lambda: len(fp._warm) == host.WARM_CONNECTIONS, 10, "connections made ahead")
    stale = [w.sock for w in fp._warm]
    monkeypatch.setattr(host, "WARM_MAX_AGE_S", 0.0)  # older than the guest's idle timeout allows
    channel = fp.open()
    assert channel is not None and channel.sock not in stale
    assert all(s.fileno() == -1 for s in stale)  # closed
    assert _get(channel.sock).startswith(b"HTTP/1.1 200 ")
    fp.disarm("test")


def test_a_connection_the_relay_closed_or_wrote_to_is_not_usable() -> None:
    armed = host.Armed(1, SECRET, 1)
    for peer_does in ("nothing", "close", "write"):
        ours, peer = socket.socketpair()
        with ours, peer:
            if peer_does == "close":
                peer.close()
            elif peer_does == "write":
                peer.sendall(b"HTTP/1.1 408 ")
            warm = host.Warm(ours, armed, made=0.0)
            assert warm.usable(armed, now=1.0) is (peer_does == "nothing"), peer_does
            assert not warm.usable(host.Armed(1, bytes(32), 2), now=1.0)  # another arming's secret
