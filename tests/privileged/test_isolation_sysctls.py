"""Sysctls through the API (docker-py against the real agent) and straight to the runtime: only Docker's
namespaced keys, in a namespace the container owns. `kernel.core_pattern` is the VM's own: set from a
container it makes the kernel run a file of the container as root on the next crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from support.agent import Agent
from support.build import build_agent  # noqa: F401
from support.rootfs import build_busybox_rootfs
from support.runtime import output, spec

from pymachine_agent.runtime import Runtime, StartError

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
# harmless if an engine did write it (a plain file name, not a `|program`); restored by the fixture anyway
PROBE = "/tmp/pymachine-sysctl-probe.%p"


@pytest.fixture
def core_pattern() -> Iterator[str]:
    before = CORE_PATTERN.read_text()
    yield before
    if CORE_PATTERN.read_text() != before:
        CORE_PATTERN.write_text(before)  # a failing engine changed the host's kernel: put it back
        pytest.fail("kernel.core_pattern of this host was changed by the engine")


@pytest.fixture
def agent(build_agent: Agent) -> Agent:  # noqa: F811 - the module's agent, busybox loaded (support.build)
    return build_agent


def run_output(agent: Agent, command: str, **kw: object) -> str:
    out = agent.client().containers.run(agent.busybox, ["sh", "-c", command], remove=True, **kw)
    return out.decode()


def test_core_pattern_is_refused_with_400_naming_the_key(agent: Agent, core_pattern: str) -> None:
    client = agent.client()
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.run(agent.busybox, ["true"], sysctls={"kernel.core_pattern": PROBE}, remove=True)
    assert info.value.status_code == 400
    assert "kernel.core_pattern" in str(info.value.explanation)
    assert CORE_PATTERN.read_text() == core_pattern
    for key in ("kernel.modprobe", "vm.overcommit_memory", "kernel.hostname"):
        with pytest.raises(docker.errors.APIError, match=key.replace(".", r"\.")) as info:
            client.containers.create(agent.busybox, ["true"], sysctls={key: "1"})
        assert info.value.status_code == 400
    assert not client.containers.list(all=True)  # nothing was created


def test_namespaced_sysctls_still_work(agent: Agent) -> None:
    out = run_output(
        agent,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max",
        sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096", "fs.mqueue.msg_max": "20"},
    )
    assert out.split() == ["1", "4096", "20"]
    assert Path("/proc/sys/kernel/shmmax").read_text().strip() != "4096"  # the container's IPC namespace only


def test_net_keys_refused_on_a_shared_network_namespace(agent: Agent) -> None:
    client = agent.client()
    with pytest.raises(docker.errors.APIError, match=r"net\.ipv4\.ip_forward") as info:
        client.containers.create(
            agent.busybox, ["true"], network_mode="host", sysctls={"net.ipv4.ip_forward": "0"}
        )
    assert info.value.status_code == 400
    other = client.containers.run(agent.busybox, ["sleep", "30"], detach=True)
    try:
        with pytest.raises(docker.errors.APIError, match=r"net\.ipv4\.ip_forward") as info:
            client.containers.create(
                agent.busybox,
                ["true"],
                network_mode=f"container:{other.id}",
                sysctls={"net.ipv4.ip_forward": "1"},
            )
        assert info.value.status_code == 400
        with pytest.raises(docker.errors.APIError, match=r"kernel\.shmmax") as info:
            client.containers.create(agent.busybox, ["true"], ipc_mode="host", sysctls={"kernel.shmmax": "1"})
        assert info.value.status_code == 400
    finally:
        other.remove(force=True)


def test_the_runtime_refuses_them_too(tmp_path: Path, core_pattern: str) -> None:
    # defence in depth: a spec that reached the runtime without the API's check is refused before writing
    layer = build_busybox_rootfs(tmp_path / "busybox")
    rt = Runtime(tmp_path / "state")
    try:
        bad = spec(layer, ["true"], sysctls={"kernel.core_pattern": PROBE})
        rt.create(bad)
        with pytest.raises(StartError, match="kernel.core_pattern"):
            rt.start(bad.id)
        assert CORE_PATTERN.read_text() == core_pattern
        shared = spec(layer, ["true"], network="host", sysctls={"net.ipv4.ip_forward": "1"})
        rt.create(shared)
        with pytest.raises(StartError, match=r"net\.ipv4\.ip_forward"):
            rt.start(shared.id)
        ok = spec(layer, ["cat", "/proc/sys/kernel/shmmax"], sysctls={"kernel.shmmax": "8192"})
        rt.create(ok)
        rt.start(ok.id)
        assert rt.wait(ok.id, timeout=60).exit_code == 0
        assert output(rt, ok.id)[0] == "8192\n"
    finally:
        for c in rt.list():
            rt.remove(c.id, force=True)
        rt.close()
