"""The sysctl validator: Docker's namespaced set only, and only in a namespace the container owns."""

from __future__ import annotations

import pytest

from pymachine_agent.dockerspec import BadParameter, translate_create
from pymachine_agent.runtime import sysctls
from pymachine_agent.runtime.sysctls import SysctlError


@pytest.mark.parametrize(
    "key",
    [
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
        "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue.msg_max", "net.ipv4.ip_forward",
        "net.ipv4.conf.eth0/100.forwarding",
    ],
)  # fmt: skip
def test_namespaced_keys_pass(key: str) -> None:
    sysctls.check({key: "1"}, private_net=True, private_ipc=True)


@pytest.mark.parametrize(
    "key",
    [
        "kernel.core_pattern", "kernel.modprobe", "vm.overcommit_memory", "kernel.hostname",
        "kernel.domainname", "fs.file-max", "kernel.shm_next_id", "kernel.msgmax.x", "netx.y", "fs.mqueue",
        "kernel.sysrq", "user.max_user_namespaces",
    ],
)  # fmt: skip
def test_other_keys_are_refused_by_name(key: str) -> None:
    with pytest.raises(SysctlError, match=f"'{key}'.*not in a separate kernel namespace"):
        sysctls.check({key: "1"}, private_net=True, private_ipc=True)


def test_shared_namespaces_refuse_their_keys() -> None:
    with pytest.raises(SysctlError, match="'net.ipv4.ip_forward'.*shares a network namespace"):
        sysctls.check({"net.ipv4.ip_forward": "1"}, private_net=False, private_ipc=True)
    with pytest.raises(SysctlError, match="'kernel.shmmax'.*shares an IPC namespace"):
        sysctls.check({"kernel.shmmax": "1"}, private_net=True, private_ipc=False)
    sysctls.check({"kernel.shmmax": "1"}, private_net=False, private_ipc=True)  # the other one is fine


@pytest.mark.parametrize("key", ["net..x", "net.", "net.a./.b", "net.a.././..", "net.x/..", "net.."])
def test_path_tricks_are_refused(key: str) -> None:
    with pytest.raises(SysctlError):
        sysctls.check({key: "1"}, private_net=True, private_ipc=True)


def test_sysctl_path_swaps_slash_and_dot() -> None:
    assert (
        sysctls.sysctl_path("net.ipv4.conf.eth0/100.rp_filter")
        == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    )


def _create(host_config: dict) -> object:
    body = {"Image": "img", "Cmd": ["true"], "HostConfig": host_config}
    image = {"Id": "sha256:" + "0" * 64, "config": {}}
    return translate_create("c" * 64, "name", body, image, ["/layer"], lambda v: f"/volumes/{v}")


def test_create_answers_400_naming_the_key() -> None:
    with pytest.raises(BadParameter, match="kernel.core_pattern") as info:
        _create({"Sysctls": {"kernel.core_pattern": "|/proc/%P/root/x"}})
    assert info.value.status == 400
    with pytest.raises(BadParameter, match="net.ipv4.ip_forward"):
        _create({"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}})
    with pytest.raises(BadParameter, match="net.ipv4.ip_forward"):
        _create({"NetworkMode": "container:other", "Sysctls": {"net.ipv4.ip_forward": "1"}})
    with pytest.raises(BadParameter, match="kernel.sem"):
        _create({"IpcMode": "host", "Sysctls": {"kernel.sem": "1 2 3 4"}})
    with pytest.raises(BadParameter, match="Sysctls"):
        _create({"Sysctls": ["kernel.shmmax=1"]})
    plan = _create({"Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096"}})
    assert plan.spec.sysctls == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096"}  # type: ignore[attr-defined]
