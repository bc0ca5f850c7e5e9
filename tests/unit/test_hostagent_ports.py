"""Port rule logic: which guest port events become which host listeners (pure)."""

from __future__ import annotations

import pytest

from pymachine.hostvm.hostagent import ports
from pymachine.hostvm.hostagent.ports import Close, Open, PortTable, Retarget


def ev(action: str = "add", host_port: int = 8080, guest_port: int = 8080, container: str = "c1", **kw):
    obj = {
        "type": "port",
        "action": action,
        "id": kw.pop("id", "e1"),
        "container": container,
        "proto": "tcp",
        "host_ip": "127.0.0.1",
        "host_port": host_port,
        "guest_port": guest_port,
        **kw,
    }
    return ports.parse_event(obj)


def test_add_opens_once_and_repeated_add_is_quiet() -> None:
    table = PortTable()
    first = table.apply(ev())
    assert first == [Open(ev().rule)]
    assert table.apply(ev(id="e2")) == []
    assert list(table.rules) == [("tcp", "127.0.0.1", 8080)]


def test_add_with_new_guest_port_retargets_without_reopening() -> None:
    table = PortTable()
    table.apply(ev(guest_port=8080))
    actions = table.apply(ev(guest_port=9090))
    assert actions == [Retarget(ev(guest_port=9090).rule)]
    assert table.target(("tcp", "127.0.0.1", 8080)).guest_port == 9090


def test_remove_closes_only_the_owner() -> None:
    table = PortTable()
    table.apply(ev(container="c1"))
    assert table.apply(ev("remove", container="other")) == []
    assert table.apply(ev("remove", container="c1")) == [Close(ev(container="c1").rule)]
    assert table.apply(ev("remove", container="c1")) == []
    assert table.rules == {}


def test_resync_keeps_reannounced_and_closes_the_rest() -> None:
    table = PortTable()
    table.apply(ev(host_port=8080))
    table.apply(ev(host_port=8081))
    table.on_hello()
    assert table.apply(ev(host_port=8080)) == []  # still published: listener kept, nothing to do
    closed = table.end_resync()
    assert closed == [Close(ev(host_port=8081).rule)]
    assert set(table.rules) == {("tcp", "127.0.0.1", 8080)}
    assert table.end_resync() == []


def test_remove_during_resync_is_not_closed_twice() -> None:
    table = PortTable()
    table.apply(ev(host_port=8080))
    table.on_hello()
    assert table.apply(ev("remove", host_port=8080)) == [Close(ev(host_port=8080).rule)]
    assert table.end_resync() == []


def test_forget_lets_a_later_add_try_again() -> None:
    table = PortTable()
    rule = ev().rule
    table.apply(ev())
    table.forget(rule.key)
    assert table.apply(ev()) == [Open(rule)]


def test_same_port_different_address_or_protocol_are_distinct() -> None:
    table = PortTable()
    a = table.apply(ev(host_ip="127.0.0.1"))
    b = table.apply(ev(host_ip="127.0.0.2"))
    c = table.apply(ev(proto="udp"))
    assert [type(x[0]) for x in (a, b, c)] == [Open, Open, Open]
    assert len(table.rules) == 3


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", "127.0.0.1"),
        (None, "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("192.0.2.7", "192.0.2.7"),
    ],
)
def test_host_ip_defaults_to_loopback_unless_named(given: str | None, expected: str) -> None:
    assert ev(host_ip=given).rule.host_ip == expected


def test_guest_port_defaults_to_host_port() -> None:
    event = ports.parse_event({"type": "port", "action": "add", "id": "x", "host_port": 5000})
    assert (event.rule.proto, event.rule.guest_port, event.rule.host_ip) == ("tcp", 5000, "127.0.0.1")


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "hello"},
        {"type": "port", "action": "update", "host_port": 1},
        {"type": "port", "action": "add", "host_port": 0},
        {"type": "port", "action": "add", "host_port": 70000},
        {"type": "port", "action": "add", "host_port": "http"},
        {"type": "port", "action": "add", "host_port": 80, "proto": "sctp"},
        {"type": "port", "action": "add", "host_port": 80, "guest_port": -1},
    ],
)
def test_bad_events_are_rejected(bad: dict) -> None:
    with pytest.raises(ports.BadPortEvent):
        ports.parse_event(bad)


def test_in_use_error_names_the_port_as_the_contract_says() -> None:
    assert ports.in_use_error(ev().rule) == "host port 127.0.0.1:8080 is already in use"
