"""Young published ports (guest-agent network/young.py): a connection that arrives before the container's
server listens waits for it instead of being refused, then the DNAT rule takes over without cutting it."""

from __future__ import annotations

import socket
import threading

import pytest
from support.netguest import FakeContainer, net_env, serve_echo, tcp_echo
from support.poll import until

from pymachine_agent.network import EndpointConfig, PortSpec, nat, young

A = "a" * 64


def published_rules(env) -> list[str]:  # type: ignore[no-untyped-def]
    return [r for r in nat.rules(env.names["nft_table"]) if r.startswith("published:")]


def serve_echo_concurrently(container: FakeContainer, port: int) -> None:
    """An echo server in the container serving connections side by side (netguest's: one at a time)."""

    def make() -> socket.socket:
        s = socket.socket()
        s.bind(("0.0.0.0", port))
        s.listen(16)
        return s

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    listener = container.run(make)
    container.servers.append(listener)
    threading.Thread(target=accept, args=(listener,), daemon=True).start()


def echo_once(conn: socket.socket, payload: bytes) -> bytes:
    conn.sendall(payload)
    data = b""
    while len(data) < len(payload):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def dnat_env(tmp_path):  # type: ignore[no-untyped-def]
    with net_env(tmp_path, port_mode="dnat") as e:
        yield e


def test_an_early_connection_waits_for_the_server_and_dnat_takes_over(dnat_env) -> None:
    env = dnat_env
    c = env.container()
    info = env.mgr.attach(A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080)]))
    gateway = info.attachments[0].gateway
    # nothing listens in the container yet: with DNAT alone both connections would be refused
    early = socket.create_connection(("127.0.0.1", 8080), timeout=10)
    other = socket.create_connection((gateway, 8080), timeout=10)
    try:
        early.sendall(b"sent before the server listened")
        assert [r for r in published_rules(env) if '"redirect"' in r], published_rules(env)
        serve_echo_concurrently(c, 80)
        assert early.recv(100) == b"sent before the server listened"
        assert echo_once(other, b"via the gateway") == b"via the gateway"
        until(
            lambda: (
                any('"dnat"' in r for r in published_rules(env))
                and not any('"redirect"' in r for r in published_rules(env))
            ),
            30,
            "the DNAT rule to take over from the relay",
        )
        assert echo_once(early, b"after the switch") == b"after the switch"  # relayed flows go on
        assert tcp_echo("127.0.0.1", 8080, b"new connection") == b"new connection"
    finally:
        early.close()
        other.close()


def test_a_port_whose_server_never_listens_resets_after_the_wait(dnat_env, monkeypatch) -> None:
    monkeypatch.setattr(young, "WAIT_S", 0.5)
    env = dnat_env
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080)]))
    with socket.create_connection(("127.0.0.1", 8080), timeout=10) as conn:
        conn.settimeout(10)
        with pytest.raises(ConnectionResetError):
            conn.sendall(b"x")
            conn.recv(10)


def test_the_relay_goes_with_the_container(dnat_env) -> None:
    env = dnat_env
    before = env.counts()
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080)]))
    (relay_port,) = env.mgr.holder.young().values()
    env.mgr.detach(A)
    assert env.counts() == before
    assert env.mgr.holder.young() == {}

    def relay_closed() -> bool:
        try:
            socket.create_connection(("127.0.0.1", relay_port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True

    until(relay_closed, 10, "the relay's listener to close")


def test_the_proxy_mode_waits_for_a_young_server_too(tmp_path) -> None:
    with net_env(tmp_path, port_mode="proxy") as env:
        c = env.container()
        env.mgr.attach(A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080)]))
        with socket.create_connection(("127.0.0.1", 8080), timeout=10) as early:
            early.sendall(b"early")
            serve_echo(c, "tcp", 80)
            assert early.recv(100) == b"early"


def test_a_connection_during_a_slow_switch_to_dnat_is_still_relayed(dnat_env) -> None:
    """On a starved guest the nft run that lets DNAT take over takes seconds; a connection redirected to the
    relay meanwhile must be accepted and served, not reset when the relay closes (test_port_answers_the_moment
    _docker_run_returns under load 20: "Remote end closed connection without response")."""
    env = dnat_env
    growing = threading.Event()
    switch = env.mgr.holder.on_grown

    def slow_switch() -> None:
        growing.set()
        threading.Event().wait(3)  # stands for an nft run on a starved guest
        switch()

    env.mgr.holder.on_grown = slow_switch
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="web", ports=[PortSpec(80, "tcp", 8080)]))
    serve_echo_concurrently(c, 80)
    until(growing.is_set, 30, "the server to be seen listening")
    assert any('"redirect"' in r for r in published_rules(env))  # not switched yet: this goes to the relay
    assert tcp_echo("127.0.0.1", 8080, b"during the switch", timeout=20) == b"during the switch"
