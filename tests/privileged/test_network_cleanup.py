"""Nothing survives container removal or an agent crash + restart: veths, nft rules, DNS, records."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from support.netguest import dns_query, make_manager, net_env, serve_echo, tcp_echo

from pymachine_agent.network import EndpointConfig, EndpointSettings, PortClashError, PortSpec, nat, plumbing
from pymachine_agent.network.netlink import Netlink

A, B, C = "a" * 64, "b" * 64, "c" * 64
EMPTY = {"veths": 0, "dnat_rules": 0, "dns_listeners": 0, "endpoint_records": 0, "published": 0}


@pytest.fixture
def env(tmp_path):
    with net_env(tmp_path) as e:
        yield e


def test_removal_leaves_no_veth_rule_or_dns_entry(env):
    env.mgr.create_network("front")
    one, two, three = env.container(), env.container(), env.container()
    env.mgr.attach(
        A, one.pid, EndpointConfig(name="one", network_mode="front", ports=[PortSpec(80, "tcp", 8080)])
    )
    env.mgr.attach(
        B,
        two.pid,
        EndpointConfig(
            name="two", networks={"front": EndpointSettings(["alias"])}, ports=[PortSpec(53, "udp")]
        ),
    )
    env.mgr.attach(C, three.pid, EndpointConfig(name="three", network_mode="none"))
    assert env.counts() == {
        "veths": 3,
        "dnat_rules": 2,
        "dns_listeners": 2,
        "endpoint_records": 3,
        "published": 2,
    }
    assert one.run(lambda: dns_query("alias"))[1]
    env.mgr.forget(B)
    assert env.counts() == {
        "veths": 1,
        "dnat_rules": 1,
        "dns_listeners": 1,
        "endpoint_records": 2,
        "published": 1,
    }
    assert one.run(lambda: dns_query("alias"))[0] == 3  # the name left with the container
    env.mgr.forget(A)
    env.mgr.forget(C)
    assert env.counts() == EMPTY
    assert list((env.state / "containers").glob("*.json")) == []
    # the network itself goes with its bridge
    assert len(plumbing.links_with_prefix(env.names["bridge_prefix"])) == 1
    env.mgr.remove_network("front")
    assert plumbing.links_with_prefix(env.names["bridge_prefix"]) == []


def test_detach_is_idempotent_and_stop_keeps_connect_config(env):
    env.mgr.create_network("front")
    c = env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="c"))
    env.mgr.connect("front", A, EndpointSettings(["later"]))
    env.mgr.detach(A)
    env.mgr.detach(A)
    assert env.counts() == EMPTY
    info = env.mgr.attach(A, c.pid, EndpointConfig(name="c"))  # restart: remembered network comes back
    assert [a.network_name for a in info.attachments] == ["bridge", "front"]
    assert info.attachments[1].aliases == ["later"]


AGENT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from support.netguest import FakeUpstream, make_manager
    from pymachine_agent.network import EndpointConfig, PortSpec
    names, pids = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    up = FakeUpstream({{}})
    mgr = make_manager(Path(sys.argv[3]), [], names, up)
    mgr.start()
    mgr.create_network("front")
    for i, (cid, pid) in enumerate(pids.items()):
        ports = [PortSpec(80, "tcp", 8080 + i)]
        mgr.attach(cid, pid, EndpointConfig(name="c%d" % i, network_mode="front", ports=ports))
    print("ready", flush=True)
    time.sleep(3600)
    """
)


def test_agent_crash_and_restart_reconciles(env, tmp_path):
    """A SIGKILLed agent leaves veths, rules and records; the next start removes what belongs to containers
    that stopped meanwhile and restores DNS and ports of those still running."""
    env.mgr.close()
    survivor, stopped = env.container(), env.container()
    state = tmp_path / "crashstate"
    script = AGENT.format(tests=os.path.dirname(os.path.dirname(__file__)))
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            json.dumps(env.names),
            json.dumps({A: survivor.pid, B: stopped.pid}),
            str(state),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout.readline().strip() == "ready"
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    assert len(plumbing.links_with_prefix(env.names["veth_prefix"])) == 2
    assert len([r for r in nat.rules(env.names["nft_table"]) if r.startswith("published:")]) == 2
    with Netlink() as nl:  # a stray veth from a crash between "create" and "record"
        nl.add_veth(env.names["veth_prefix"] + "stray", "strayp")
    serve_echo(survivor, "tcp", 80)

    mgr = make_manager(state, [], env.names, env.upstream)
    try:
        mgr.start(running={A: survivor.pid})  # B's process still exists, but the runtime says it stopped
        assert plumbing.links_with_prefix(env.names["veth_prefix"]) == [
            mgr.endpoint(A).attachments[0].host_ifname
        ]
        assert [p.host_port for p in mgr.published_ports()] == [8080]
        assert len([r for r in nat.rules(env.names["nft_table"]) if r.startswith("published:")]) == 1
        assert sorted(p.name for p in (state / "endpoints").iterdir()) == [A + ".json"]
        assert mgr.dns.containers() == [A]
        assert survivor.run(lambda: dns_query("c0")) == (0, [mgr.endpoint(A).attachments[0].ip])
        assert tcp_echo("127.0.0.1", 8080, b"still") == b"still"
        with pytest.raises(PortClashError):  # the restarted agent holds the port again
            mgr.attach(C, stopped.pid, EndpointConfig(name="x", ports=[PortSpec(80, "tcp", 8080)]))
        mgr.detach(A)
        assert plumbing.links_with_prefix(env.names["veth_prefix"]) == []
        assert [r for r in nat.rules(env.names["nft_table"]) if r.startswith("published:")] == []
    finally:
        mgr.close()


def test_restart_judges_liveness_by_pid_and_namespace_without_a_running_list(env, tmp_path):
    c, gone = env.container(), env.container()
    env.mgr.attach(A, c.pid, EndpointConfig(name="alive"))
    env.mgr.attach(B, gone.pid, EndpointConfig(name="gone", ports=[PortSpec(80, "tcp", 9090)]))
    env.mgr.close()
    gone.stop()
    mgr = make_manager(env.state, [], env.names, env.upstream)
    try:
        mgr.start()
        assert mgr.endpoint(A) is not None and mgr.endpoint(B) is None
        assert mgr.published_ports() == []
        assert len(plumbing.links_with_prefix(env.names["veth_prefix"])) == 1
    finally:
        mgr.close()


def test_connecting_a_stopped_container_to_its_own_network_adds_aliases(env):
    """What compose v1 does: create with network X, then connect to X with aliases before the start."""
    env.mgr.create_network("front")
    c, asker = env.container(), env.container()
    env.mgr.connect("front", A, EndpointSettings(["svc"]))
    info = env.mgr.attach(
        A,
        c.pid,
        EndpointConfig(name="c", network_mode="front", networks={"front": EndpointSettings(["first"])}),
    )
    assert [a.network_name for a in info.attachments] == ["front"]
    assert info.attachments[0].aliases == ["first", "svc"]
    env.mgr.attach(B, asker.pid, EndpointConfig(name="asker", network_mode="front"))
    assert asker.run(lambda: dns_query("svc")) == (0, [info.attachments[0].ip])
