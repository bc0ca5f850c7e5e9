"""Issue 12, point 5 (HostIp) through a real machine: a port published without an address is shown at the
address the host agent really binds (127.0.0.1), and a HostIp that is a name is refused on the API path."""

from __future__ import annotations

import json

import pytest
from support.hostagent_vm import VmMachine, free_port, http_status

HTTPD = ["pymachine/busybox", "httpd", "-f", "-p", "80", "-h", "/bin"]


def test_ps_and_inspect_show_the_loopback_the_host_agent_binds(ha_vm: VmMachine) -> None:  # noqa: F811
    from pymachine.hostvm.hostagent import launcher

    port = free_port()
    cid = ha_vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD).stdout.strip()
    assert http_status(port) == 404  # reachable on the host's 127.0.0.1
    forward = next(f for f in launcher.status(ha_vm.name)["forwards"] if f["host_port"] == port)
    assert forward["host_ip"] == "127.0.0.1"
    ps = ha_vm.docker("ps", "--filter", f"id={cid}", "--format", "{{.Ports}}").stdout.strip()
    assert ps == f"127.0.0.1:{port}->80/tcp"
    ports = json.loads(ha_vm.docker("inspect", "--format", "{{json .NetworkSettings.Ports}}", cid).stdout)
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}


@pytest.mark.parametrize("host_ip", ["0", "localhost"])
def test_a_host_ip_that_is_a_name_is_refused(ha_vm: VmMachine, host_ip: str) -> None:  # noqa: F811
    import docker

    client = docker.DockerClient(base_url=f"unix://{ha_vm.docker_socket}", timeout=120)
    try:
        with pytest.raises(docker.errors.APIError) as err:
            client.containers.create("pymachine/busybox", "true", ports={"80/tcp": (host_ip, free_port())})
        assert err.value.status_code == 400 and repr(host_ip) in str(err.value)
    finally:
        client.close()
