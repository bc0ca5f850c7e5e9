"""Published ports through QEMU's hostfwd (hostagent/qemufwd.py, portforward.Forwarder's qemu path): the pure
parts, with a monitor that keeps its rules like QEMU 7.2 answers (replies copied from a real `info usernet`).
The real QEMU path is proven in tests/vm/test_forward_qemu_vm.py."""

from __future__ import annotations

import socket

import pytest

from pymachine.hostvm.hostagent import qemufwd
from pymachine.hostvm.hostagent.portforward import BindError, Forwarder
from pymachine.hostvm.hostagent.ports import PortRule
from pymachine.hostvm.status import PortForward, ports_summary

USERNET = (
    "Hub -1 (net0):\r\n"
    "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
    "  TCP[ESTABLISHED]   23       127.0.0.1 51234       10.0.2.15 45556     0     0\r\n"
    "  TCP[HOST_FORWARD]  15       127.0.0.1 45556       10.0.2.15 45556     0     0\r\n"
    "  TCP[HOST_FORWARD]  11       127.0.0.1 45555       10.0.2.15    22     0     0\r\n"
    "  UDP[HOST_FORWARD]  16         0.0.0.0 45557       10.0.2.15 45557     0     0\r\n"
)


class FakeQemu:
    """Keeps hostfwd rules as QEMU does; answers with QEMU 7.2's wording. `down` = monitor unreachable."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str, int], int] = {("tcp", "127.0.0.1", 40022): 22}
        self.down = False
        self.taken: set[int] = set()  # host ports another process holds

    def __call__(self, line: str) -> str:
        if self.down:
            raise ConnectionRefusedError("qmp.sock: connection refused")
        words = line.split()
        if words[:2] == ["info", "usernet"]:
            rows = [
                f"  {p.upper()}[HOST_FORWARD]  9  {ip} {port}  10.0.2.15 {g}  0 0"
                for (p, ip, port), g in self.rules.items()
            ]
            return "Hub -1 (net0):\r\n  Protocol[State] ...\r\n" + "\r\n".join(rows) + "\r\n"
        proto, ip, rest = words[2].split(":", 2)
        if words[0] == "hostfwd_add":
            port, guest = int(rest.split("-")[0]), int(rest.split(":")[-1])
            if (proto, ip, port) in self.rules or port in self.taken:
                return f"Could not set up host forwarding rule '{words[2]}'\r\n"
            self.rules[(proto, ip, port)] = guest
            return ""
        key = (proto, ip, int(rest))
        if self.rules.pop(key, None) is None:
            return f"host forwarding rule for {words[2]} not found\r\n"
        return f"host forwarding rule for {words[2]} removed\r\n"


class NoLink:
    def current(self) -> None:
        return None


def rule(port: int, proto: str = "tcp", ip: str = "127.0.0.1") -> PortRule:
    return PortRule(proto, ip, port, port, "c1")  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_usernet_keeps_host_forwards_only() -> None:
    found = qemufwd.parse_usernet(USERNET)
    assert [(f.proto, f.host_ip, f.host_port, f.guest_port) for f in found] == [
        ("tcp", "127.0.0.1", 45556, 45556),
        ("tcp", "127.0.0.1", 45555, 22),
        ("udp", "0.0.0.0", 45557, 45557),
    ]
    assert [f.ours for f in found] == [True, False, True]  # sshd's forward is never touched


def test_spec_and_what_stays_on_ssh() -> None:
    assert qemufwd.spec(rule(8080, "udp")) == "udp:127.0.0.1:8080-:8080"
    assert qemufwd.supported(rule(8080)) and not qemufwd.supported(rule(8080, ip="::1"))
    # a restricted user network drops the guest's UDP replies: UDP only where the network carries them
    assert not qemufwd.supported(rule(53, "udp")) and qemufwd.supported(rule(53, "udp"), udp=True)


def test_add_adopts_its_own_rule_and_refuses_a_taken_port() -> None:
    qemu = FakeQemu()
    fwds = qemufwd.QemuForwards(qemu)
    fwds.add(rule(8080))
    fwds.add(rule(8080))  # a new host agent after kill -9: the rule is there already, with our target
    qemu.taken.add(8081)
    with pytest.raises(qemufwd.MonitorError, match="Could not set up"):
        fwds.add(rule(8081))


def test_reconcile_removes_stale_and_readds_missing_but_never_sshd() -> None:
    qemu = FakeQemu()
    qemu.rules[("tcp", "127.0.0.1", 9000)] = 9000  # left by a dead agent, its container gone
    fwds = qemufwd.QemuForwards(qemu, udp=True)
    added, removed = fwds.reconcile([rule(8080), rule(5353, "udp")])  # a restarted QEMU lost both
    assert {r.host_port for r in added} == {8080, 5353} and [f.host_port for f in removed] == [9000]
    assert set(qemu.rules) == {
        ("tcp", "127.0.0.1", 40022),
        ("tcp", "127.0.0.1", 8080),
        ("udp", "127.0.0.1", 5353),
    }
    assert fwds.reconcile([rule(8080), rule(5353, "udp")]) == ([], [])


def test_reconcile_at_hello_keeps_rules_a_new_agent_does_not_know_yet() -> None:
    """A host agent started after a kill -9 reconciles at the guest's hello with an empty table: the rules
    QEMU still serves stay until the port replay's end decides (CI once saw the port refused after start)."""
    qemu = FakeQemu()
    qemu.rules[("tcp", "127.0.0.1", 9000)] = 80  # the running container's, from the killed agent
    fwds = qemufwd.QemuForwards(qemu)
    assert fwds.reconcile([], remove_stale=False) == ([], [])
    assert qemu.rules[("tcp", "127.0.0.1", 9000)] == 80
    added, removed = fwds.reconcile([rule(8080)], remove_stale=False)  # a restored QEMU lost this one
    assert [r.host_port for r in added] == [8080] and removed == []
    _, removed = fwds.reconcile([rule(8080)])  # the replay's end: the container went meanwhile
    assert [f.host_port for f in removed] == [9000]


def test_forwarder_prefers_qemu_and_falls_back_to_ssh() -> None:
    qemu = FakeQemu()
    fwd = Forwarder(NoLink())  # type: ignore[arg-type]
    fwd.qemu = qemufwd.QemuForwards(qemu)
    a, b = free_port(), free_port()
    fwd.open(rule(a))
    assert qemu.rules[("tcp", "127.0.0.1", a)] == a
    qemu.down = True
    fwd.open(rule(b))  # monitor gone: the agent listens itself
    try:
        paths = {f["host_port"]: (f["path"], f["health"]) for f in fwd.snapshot()}
        assert paths == {a: ("qemu", "ok"), b: ("ssh", "waiting-for-link")}
        with socket.create_connection(("127.0.0.1", b), timeout=2):
            pass  # bound by this process
    finally:
        qemu.down = False
        fwd.close_all()
    assert set(qemu.rules) == {("tcp", "127.0.0.1", 40022)}


def test_a_port_qemu_refuses_because_it_is_taken_fails_with_the_bind_error() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    qemu = FakeQemu()
    qemu.taken.add(port)
    fwd = Forwarder(NoLink())  # type: ignore[arg-type]
    fwd.qemu = qemufwd.QemuForwards(qemu)
    try:
        with pytest.raises(BindError, match=f"host port 127.0.0.1:{port} is already in use"):
            fwd.open(rule(port))
    finally:
        blocker.close()


def test_park_moves_qemu_ports_to_the_agent_and_unpark_moves_them_back() -> None:
    qemu = FakeQemu()
    fwd = Forwarder(NoLink())  # type: ignore[arg-type]
    fwd.qemu = qemufwd.QemuForwards(qemu)
    port = free_port()
    fwd.open(rule(port))
    fwd.park()
    try:
        assert ("tcp", "127.0.0.1", port) not in qemu.rules
        assert [f["path"] for f in fwd.snapshot()] == ["ssh"]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the agent's listener
        fwd.unpark()
        assert qemu.rules[("tcp", "127.0.0.1", port)] == port
        assert [f["path"] for f in fwd.snapshot()] == ["qemu"]
    finally:
        fwd.close_all()


def test_port_forward_is_typed_for_the_front_ends() -> None:
    status = {"forwards": [{"proto": "udp", "host_ip": "127.0.0.1", "host_port": 53, "path": "qemu"}]}
    assert ports_summary(status) == "53/udp qemu" and ports_summary(None) == "-"
    assert PortForward.from_json(status["forwards"][0]).label() == "127.0.0.1:53/udp via qemu"


def test_a_port_an_earlier_agent_left_in_qemu_is_taken_back_for_the_ssh_path() -> None:
    qemu = FakeQemu()
    port = free_port()
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stands for QEMU's own socket of that rule
    held.bind(("127.0.0.1", port))
    qemu.rules[("udp", "127.0.0.1", port)] = port
    fwd = Forwarder(NoLink())  # type: ignore[arg-type]
    real_remove = qemu.__call__

    def monitor(line: str) -> str:
        if line.startswith("hostfwd_remove"):
            held.close()  # QEMU closes its socket with the rule
        return real_remove(line)

    fwd.qemu = qemufwd.QemuForwards(monitor)  # UDP: SSH path
    try:
        fwd.open(rule(port, "udp"))
        assert [f["path"] for f in fwd.snapshot()] == ["ssh"]
        assert ("udp", "127.0.0.1", port) not in qemu.rules
    finally:
        fwd.close_all()
        held.close()
