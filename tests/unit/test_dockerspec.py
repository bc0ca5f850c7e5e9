"""The pure translation of a Docker create body into runtime and network specs, and the ps/inspect views."""

from __future__ import annotations

import pytest

from pymachine_agent.dockerspec import (
    BadParameter,
    combine_command,
    merge_env,
    parse_bind,
    parse_size,
    port_specs,
    seccomp_mode,
    translate_create,
)
from pymachine_agent.dockerview import container_matches, human_duration, status_text
from pymachine_agent.network import PortSpec
from pymachine_agent.runtime import ContainerState

CID = "ab" * 32
IMAGE = {
    "Id": "sha256:" + "cd" * 32,
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "WorkingDir": "/srv",
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"maintainer": "x"},
        "StopSignal": "SIGQUIT",
    },
}


def _vol(name: str) -> str:
    return f"/state/volumes/{name}/_data"


def test_entrypoint_and_cmd_combination() -> None:
    assert combine_command(["/ep"], ["a"], None, None) == (["/ep"], ["a"])
    assert combine_command(["/ep"], ["a"], None, ["b"]) == (["/ep"], ["b"])
    # an entrypoint in the request drops the image's Cmd
    assert combine_command(["/ep"], ["a"], ["/other"], None) == (["/other"], [])
    # --entrypoint "" clears it
    assert combine_command(["/ep"], ["a"], [""], ["sh"]) == ([], ["sh"])
    assert combine_command(None, None, None, "echo hi") == ([], ["/bin/sh", "-c", "echo hi"])


def test_env_merge_overrides_by_key() -> None:
    # a bare KEY is kept in Config.Env as given (dockerd does); it unsets KEY in the process (build_env)
    assert merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3", "NOVALUE"]) == [
        "PATH=/bin",
        "A=2",
        "B=3",
        "NOVALUE",
    ]
    assert merge_env(["PATH=/bin", "A=1"], ["A"]) == ["PATH=/bin", "A"]


def test_sizes_binds_and_ports() -> None:
    assert parse_size("64m") == 64 * 1024**2 and parse_size("1g") == 1024**3 and parse_size("512") == 512
    with pytest.raises(BadParameter):
        parse_size("lots")
    assert parse_bind("/x:/y") == ("/x", "/y", False, [])
    assert parse_bind("vol:/y:ro,rshared") == ("vol", "/y", True, ["rshared"])
    with pytest.raises(BadParameter):
        parse_bind("/x:relative")
    assert port_specs({"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostPort": ""}]}) == [
        PortSpec(80, "tcp", 8080, ""),
        PortSpec(53, "udp", 0, ""),
    ]


def test_cli_run_body_translates_fully() -> None:
    body = {
        "Image": "nginx",
        "Cmd": None,
        "Entrypoint": None,
        "Env": ["A=b", "LANG=en"],
        "User": "1000:1000",
        "Hostname": "",
        "Tty": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "Labels": {"app": "web"},
        "HostConfig": {
            "Binds": ["/host:/in:ro", "named:/vol"],
            "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576}}],
            "Tmpfs": {"/run": "size=64m"},
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "NetworkMode": "default",
            "Memory": 64 * 1024**2,
            "MemorySwap": 128 * 1024**2,
            "NanoCpus": 1_500_000_000,
            "CpuShares": 512,
            "PidsLimit": 50,
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": ["MKNOD"],
            "ExtraHosts": ["db:10.0.0.5"],
            "Dns": ["1.1.1.1"],
            "ReadonlyRootfs": True,
            "LogConfig": {"Type": "", "Config": {}},
        },
    }
    plan = translate_create(CID, "web", body, IMAGE, ["/l1", "/l2"], _vol)
    spec, ep = plan.spec, plan.endpoint
    assert spec.argv == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    assert spec.env == ["PATH=/usr/bin:/bin", "LANG=en", "A=b"]
    assert spec.workdir == "/srv" and spec.user == "1000:1000"
    assert spec.hostname == CID[:12] and spec.tty and spec.open_stdin and spec.stdin_once
    assert spec.layers == ["/l1", "/l2"]
    kinds = {(m.type, m.target, m.source, m.readonly) for m in spec.mounts}
    assert ("bind", "/in", "/host", True) in kinds
    assert ("volume", "/vol", _vol("named"), False) in kinds
    assert ("tmpfs", "/scratch", "", False) in kinds and ("tmpfs", "/run", "", False) in kinds
    assert plan.named_volumes == ["named"] and plan.anonymous_targets == ["/data"]
    lim = spec.limits
    assert (lim.memory, lim.memory_swap, lim.nano_cpus, lim.cpu_shares, lim.pids_limit) == (
        64 * 1024**2,
        128 * 1024**2,
        1_500_000_000,
        512,
        50,
    )
    assert spec.restart_policy.name == "on-failure" and spec.restart_policy.maximum_retry_count == 3
    assert spec.cap_add == ["NET_ADMIN"] and spec.cap_drop == ["MKNOD"] and spec.readonly_rootfs
    assert spec.stop_signal == "SIGQUIT" and spec.network == "new"
    assert spec.labels == {"maintainer": "x", "app": "web"}
    assert ep.network_mode == "bridge" and ep.ports == [PortSpec(80, "tcp", 8080, "127.0.0.1")]
    assert ep.extra_hosts == ["db:10.0.0.5"] and ep.dns == ["1.1.1.1"] and ep.hostname == CID[:12]
    docker = spec.extra["docker"]
    assert docker["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert docker["HostConfig"]["NetworkMode"] == "bridge"
    assert docker["Config"]["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert docker["Config"]["ExposedPorts"] == {"80/tcp": {}}
    assert docker["Image"] == IMAGE["Id"]


def test_docker_py_sparse_body_gets_defaults() -> None:
    body = {
        "Image": "busybox",
        "Cmd": ["echo", "hi"],
        "NetworkDisabled": False,
        "HostConfig": {"NetworkMode": "default"},
    }
    plan = translate_create(CID, "x", body, {"Id": "sha256:1", "config": {"Cmd": ["sh"]}}, [], _vol)
    hc = plan.spec.extra["docker"]["HostConfig"]
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert hc["RestartPolicy"]["Name"] == "no" and hc["PortBindings"] == {}
    assert plan.spec.argv == ["echo", "hi"]


def test_network_modes_and_bad_requests() -> None:
    base = {"Image": "x", "Cmd": ["sh"]}
    host = translate_create(
        CID, "n", {**base, "HostConfig": {"NetworkMode": "host"}}, IMAGE, [], _vol, host_name="guest"
    )
    assert host.spec.network == "host" and host.spec.hostname == "guest"
    none = translate_create(CID, "n", {**base, "HostConfig": {"NetworkMode": "none"}}, IMAGE, [], _vol)
    assert none.spec.network == "new" and none.endpoint.network_mode == "none"
    user = translate_create(
        CID,
        "n",
        {
            **base,
            "HostConfig": {"NetworkMode": "mynet"},
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["db"]}}},
        },
        IMAGE,
        [],
        _vol,
    )
    assert user.spec.network == "new" and user.endpoint.networks["mynet"].aliases == ["db"]
    with pytest.raises(BadParameter):
        translate_create(
            CID,
            "n",
            {**base, "HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}},
            IMAGE,
            [],
            _vol,
        )
    with pytest.raises(BadParameter):
        translate_create(CID, "n", {**base, "HostConfig": {"Memory": 1024}}, IMAGE, [], _vol)
    with pytest.raises(BadParameter):
        translate_create(CID, "n", {"Image": "x"}, {"Id": "sha256:1", "config": {}}, [], _vol)


def test_status_text_and_filters() -> None:
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(5) == "5 seconds" and human_duration(90) == "About a minute"
    assert human_duration(3 * 3600) == "3 hours"
    now = 1_800_000_000.0
    running = ContainerState(id=CID, name="web", status="running", started_at="2027-01-15T08:00:00Z")
    assert status_text(running, now=now).startswith("Up ")
    exited = ContainerState(
        id=CID,
        name="web",
        status="exited",
        exit_code=3,
        finished_at="2027-01-15T07:59:57Z",
        started_at="2027-01-15T07:59:50Z",
    )
    assert status_text(exited, now=1_800_000_000.0).startswith("Exited (3) ")
    assert status_text(ContainerState(id=CID, name="w", status="created")) == "Created"
    assert container_matches(exited, {"status": ["exited"], "name": ["we"]}, None, [])
    assert not container_matches(exited, {"status": ["running"]}, None, [])
    assert container_matches(exited, {"exited": ["3"], "id": [CID[:6]]}, None, [])


@pytest.mark.parametrize(
    ("opts", "mode"),
    [
        (None, "default"),
        ([], "default"),
        (["seccomp=unconfined"], "unconfined"),
        (["seccomp:unconfined"], "unconfined"),
        (["no-new-privileges"], "default"),
        (["no-new-privileges=true", "seccomp=unconfined"], "unconfined"),
        (["no-new-privileges:true"], "default"),
        (["apparmor=unconfined", "label=disable"], "default"),
        (["seccomp=unconfined", "seccomp=builtin"], "default"),
        # a custom profile (the JSON the CLI sends for seccomp=FILE) is carried, compact, to the runtime
        (['seccomp={"defaultAction": "SCMP_ACT_ALLOW"}'], '{"defaultAction":"SCMP_ACT_ALLOW"}'),
    ],
)
def test_security_opt_maps_onto_the_runtime_seccomp(opts: list[str] | None, mode: str) -> None:
    assert seccomp_mode(opts) == mode
    body = {"Image": "x", "Cmd": ["sh"], "HostConfig": {"SecurityOpt": opts}}
    plan = translate_create(CID, "s", body, {"Id": "sha256:1", "config": {}}, [], _vol)
    assert plan.spec.seccomp == mode
    assert plan.spec.extra["docker"]["HostConfig"]["SecurityOpt"] == opts  # inspect shows what was asked


@pytest.mark.parametrize(
    "opt",
    [
        'seccomp={"defaultAction": "SCMP_ACT_NOTIFY"}',
        "seccomp={not json",
        "seccomp=/home/me/profile.json",
        "bogus",
        "nosuch=1",
        "no-new-privileges=maybe",
    ],
)
def test_security_opt_refuses_what_it_cannot_honour(opt: str) -> None:
    with pytest.raises(BadParameter):
        seccomp_mode([opt])
