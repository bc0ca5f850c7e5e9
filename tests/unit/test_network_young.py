"""Young published ports (guest-agent network/young.py): the table's redirect to the relay, and reading
whether a server listens from /proc (this process's own namespace: no root needed)."""

import os
import socket

from pymachine_agent.network import nat
from pymachine_agent.network.young import listening


def test_a_young_port_is_redirected_to_its_relay_which_containers_may_reach():
    text = nat.render("pm", [nat.BridgeNet("br0", "172.17.0.0/16")], [], young=[(8080, 40001)])
    lines = [line.strip() for line in text.splitlines()]
    assert "tcp dport 8080 redirect to :40001" in lines
    assert "tcp dport { 40001 } accept" in lines  # from a container through its gateway, like a proxy's
    assert not any("dnat to" in line for line in lines)


def test_listening_sees_a_listener_on_any_address_and_nothing_else():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    try:
        assert listening(os.getpid(), port) is False  # bound is not listening
        probe.listen()
        assert listening(os.getpid(), port) is True
    finally:
        probe.close()
    six = socket.socket(socket.AF_INET6)
    six.bind(("::", 0))
    six.listen()
    try:
        assert listening(os.getpid(), six.getsockname()[1]) is True
    finally:
        six.close()


def test_listening_of_a_gone_process_is_none():
    assert listening(2**22 + 12345, 80) is None  # above pid_max's ceiling: no such process


def test_an_ssh_provisioned_host_has_no_young_ports():
    """On a host with a network of its own the redirect to a relay would be local delivery, past the guard's
    forward hook, and the relay listens on every address: remote_install's agent.json turns young ports off
    (CI: test_remote_ssh reached a young port through the remote host's own address)."""
    import json

    from pymachine.hostvm import remote_install
    from pymachine_agent.network.endpoints import PortHolder
    from pymachine_agent.network.model import PublishedPort

    assert json.loads(remote_install.settings("m"))["young_ports"] is False
    port = PublishedPort("c1", "tcp", "127.0.0.1", 8080, "172.17.0.2", 80)
    off, on = PortHolder(young=False), PortHolder()
    with socket.socket() as a, socket.socket() as b:
        off.add("c1", a, port, proxy=False, pid=os.getpid())
        on.add("c1", b, port, proxy=False, pid=os.getpid())
        try:
            assert off.young() == {} and off.held["c1"] == [a]
            assert list(on.young()) == [8080]
        finally:
            for holder in on.held["c1"][1:]:
                holder.close()
