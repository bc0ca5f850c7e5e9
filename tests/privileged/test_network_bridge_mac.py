"""A network's bridge keeps its MAC address while containers come and go.

Why it matters: a Linux bridge whose address was never set takes the lowest MAC among its ports, and changes
when that port leaves. Each container on the network has the old MAC in its neighbour cache as its gateway's,
and a reply it sends to the guest or through a published port then goes to a MAC no one has: a connection in
flight at that moment hangs until the cache entry expires (15-45 s, then probes). That is what made a request
hang for 60 s during an app's release switch (docs/deploy.md: the router's answer to the client was lost when
the old release's veth, which held the lowest MAC, was removed). Both tests fail on a bridge
without a set MAC.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.netguest import FakeContainer, NetEnv, net_env

from pymachine_agent.network import EndpointConfig
from pymachine_agent.network.endpoints import attachments_of
from pymachine_agent.network.netlink import Netlink

A, B = "a" * 64, "b" * 64
LOWEST = "00:00:00:00:00:01"  # lower than any MAC the kernel gives a veth: on an unset bridge, the bridge's


@pytest.fixture
def env(tmp_path: Path) -> Iterator[NetEnv]:
    with net_env(tmp_path) as e:
        yield e


def bridge_mac(env: NetEnv, network: str) -> str:
    with env.mgr.lock:
        name = next(rec["_bridge"] for rec in env.mgr.table.bridges() if rec["Name"] == network)
    with Netlink() as nl:
        link = nl.link(name)
        assert link is not None
        return link.mac


def attach(env: NetEnv, cid: str, name: str) -> tuple[FakeContainer, str, str]:
    """A container on network `front`: (it, its address, its host-side veth)."""
    c = env.container()
    env.mgr.attach(cid, c.pid, EndpointConfig(name=name, network_mode="front"))
    (a,) = attachments_of(env.mgr.live[cid])
    return c, a.ip, a.host_ifname


def lowest_mac_to(host_ifname: str) -> None:
    with Netlink() as nl:
        nl.set_link(nl.index(host_ifname), mac=LOWEST)


def test_the_bridge_mac_stays_when_the_port_with_the_lowest_mac_leaves(env: NetEnv) -> None:
    env.mgr.create_network("front")
    attach(env, A, "one")
    before = bridge_mac(env, "front")
    assert before != "00:00:00:00:00:00"
    _, _, veth = attach(env, B, "two")
    lowest_mac_to(veth)  # an unset bridge takes this one now
    assert bridge_mac(env, "front") == before
    env.mgr.forget(B)  # and would change again here
    assert bridge_mac(env, "front") == before
    env.mgr.forget(A)  # an unset bridge without ports has no address at all
    assert bridge_mac(env, "front") == before


def test_a_connection_in_flight_is_answered_after_another_container_leaves(env: NetEnv) -> None:
    """The switch's shape: the guest has sent its request to one container and waits; another container on
    the network (the one whose veth has the lowest MAC) is removed; then the answer comes. It must arrive."""
    env.mgr.create_network("front")
    one, ip, _ = attach(env, A, "one")
    _, _, veth = attach(env, B, "two")
    lowest_mac_to(veth)
    listener = one.run(lambda: _listen(80))
    asked, answer = threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            asked.set()
            answer.wait(30)
            conn.sendall(b"answer")

    threading.Thread(target=serve, daemon=True).start()
    try:
        with socket.create_connection((ip, 80), timeout=10) as s:
            s.sendall(b"request")
            assert asked.wait(10)
            env.mgr.forget(B)  # its veth goes; the guest sends nothing more to `one` from here on
            answer.set()
            s.settimeout(5)  # an answer to a stale gateway MAC waits 15 s or more for the neighbour entry
            assert s.recv(64) == b"answer"
    finally:
        answer.set()
        listener.close()


def _listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4)
    return s
