"""What a container can reach of the real guest (the direct-QEMU machine of support/hostagent_vm.py): not
sshd on a gateway address nor on the uplink, not a listener on the guest's 127.0.0.1 (a forged frame, see
support/forged_syn.py), from the default bridge and from a user network; while published ports, container to
container and ping of the gateway still work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.hostagent_vm import VmMachine, env_of, free_port, http_status

BB = "pymachine/busybox"
UPLINK = "10.0.2.15"  # the guest's address on QEMU's user network: hostfwd's target for sshd
LOOPBACK_PORT = 7999
FORGED_SYN = Path(__file__).resolve().parent.parent / "support" / "forged_syn.py"


@pytest.fixture(scope="module")
def vm(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    machine: VmMachine = request.getfixturevalue("hostagent_machine")
    with env_of(machine):
        from pymachine.hostvm import ssh

        client = ssh.connect(machine.name)
        try:
            sftp = client.open_sftp()
            sftp.put(str(FORGED_SYN), "/root/forged_syn.py")
            sftp.close()
        finally:
            client.close()
        # a service of the guest's own, on its loopback only
        listen = (
            "import socket, time; s = socket.socket(); "
            f"s.bind(('127.0.0.1', {LOOPBACK_PORT})); s.listen(8); time.sleep(3600)"
        )
        status, _, err = machine.ssh(f'setsid python3 -c "{listen}" </dev/null >/dev/null 2>&1 &')
        assert status == 0, err
        machine.docker("network", "create", "isonet")
        try:
            yield machine
        finally:
            machine.remove_all_containers()
            machine.docker("network", "rm", "isonet", check=False)
            machine.ssh(f"pkill -f 'bind..127.0.0.1., {LOOPBACK_PORT}' || true")


def gateway(vm: VmMachine, net: str) -> str:
    return json.loads(vm.docker("network", "inspect", net).stdout)[0]["IPAM"]["Config"][0]["Gateway"]


def banner(vm: VmMachine, net: str, host: str, port: int) -> str:
    """What a container reads from host:port within 5 s (busybox nc): an SSH banner means sshd was reached."""
    out = vm.docker(
        "run", "--rm", "--network", net, BB, "sh", "-c", f"nc -w 5 {host} {port} </dev/null", check=False
    )
    return out.stdout


@pytest.mark.parametrize("net", ["bridge", "isonet"])
def test_no_container_reaches_the_guests_sshd(vm: VmMachine, net: str) -> None:
    for host in (gateway(vm, "bridge"), gateway(vm, "isonet"), UPLINK):
        assert "SSH-" not in banner(vm, net, host, 22), f"a container on {net} reached sshd at {host}:22"


@pytest.mark.parametrize("net", ["bridge", "isonet"])
def test_no_container_reaches_the_guests_loopback(vm: VmMachine, net: str) -> None:
    cid = vm.docker("run", "-d", "--network", net, BB, "sleep", "600").stdout.strip()
    info = json.loads(vm.docker("inspect", cid).stdout)[0]
    ip = info["NetworkSettings"]["Networks"][net]["IPAddress"]
    gw = gateway(vm, net)
    status, out, err = vm.ssh(
        f"dev=$(ip -o -4 addr show | awk '$4 ~ /^{gw}\\// {{print $2}}'); cat /sys/class/net/$dev/address"
    )
    assert status == 0, err
    mac = out.decode().strip()
    pid = info["State"]["Pid"]
    status, out, err = vm.ssh(f"python3 /root/forged_syn.py {pid} eth0 {ip} {mac} {LOOPBACK_PORT}")
    assert status == 0, err
    assert out.decode().strip() == "blocked"
    vm.docker("rm", "-f", cid)


def test_what_containers_need_still_works(vm: VmMachine) -> None:
    port = free_port()
    web = "httpd -f -p 80 -h /etc"
    vm.docker("run", "-d", "--name", "isoweb", "--network", "isonet", "-p", f"{port}:80", BB, "sh", "-c", web)
    assert http_status(port, "/hostname") == 200  # a published port, from the host
    got = vm.docker("run", "--rm", "--network", "isonet", BB, "wget", "-qO-", "http://isoweb/hostname").stdout
    assert got.strip()  # container to container by name
    gw = gateway(vm, "bridge")
    assert vm.docker("run", "--rm", BB, "ping", "-c", "1", "-W", "5", gw, check=False).returncode == 0
    # the guest itself still reaches its loopback service and sshd is still the host's way in
    assert (
        vm.ssh(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {LOOPBACK_PORT}), 5)\"")[
            0
        ]
        == 0
    )
    vm.docker("rm", "-f", "isoweb")
