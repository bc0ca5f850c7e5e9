"""Published ports through QEMU's own forwarding (hostagent/qemufwd.py) on the shared machine `ha`
(direct-QEMU driver): live when `docker run` returns, bound to the address asked for, reconciled with QEMU's
`info usernet` after kill -9 of the host agent, UDP (SSH path: the restricted user network drops guest
datagrams), and the SSH path when the monitor cannot be reached. QEMU's own rule list is the evidence."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import pytest
from support.hostagent_vm import VmMachine, free_port, http_status, refused, wait_for
from support.static_c import udp_echo_binary

HTTPD = ["pymachine/busybox", "httpd", "-f", "-p", "80", "-h", "/bin"]  # any HTTP answer proves the path


def qemu_rules(vm: VmMachine) -> dict[tuple[str, str, int], int]:
    """QEMU's hostfwd rules of the published ports (sshd's excluded): key → guest port."""
    from pymachine.hostvm.drivers.qemu import QemuDriver
    from pymachine.hostvm.hostagent import qemufwd

    listed = qemufwd.parse_usernet(QemuDriver().monitor_command(vm.name, "info usernet"))
    return {f.key: f.guest_port for f in listed if f.ours}


def forwards(vm: VmMachine) -> dict[int, tuple[str, str]]:
    """host port → (path, health), from the host agent's status (what `inspect` and `list` show)."""
    from pymachine.hostvm.hostagent import launcher

    return {f["host_port"]: (f["path"], f["health"]) for f in launcher.status(vm.name)["forwards"]}


def other_host_address() -> str:
    """An IPv4 address of this host other than loopback (a UDP connect sends nothing)."""
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if not addr.startswith("127."):
            return addr
    pytest.skip("this host has no IPv4 address besides loopback")


def test_a_port_goes_through_qemu_and_answers_when_docker_run_returns(ha_vm: VmMachine) -> None:
    port = free_port()
    cid = ha_vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD).stdout.strip()
    # the forward existed before the host agent acknowledged the port event, so before `run` returned
    assert qemu_rules(ha_vm).get(("tcp", "127.0.0.1", port)) == port
    assert http_status(port) == 404
    assert forwards(ha_vm)[port] == ("qemu", "ok")
    list_out = ha_vm.pymachine("list").stdout
    assert f"{port}/tcp qemu" in list_out, list_out
    ha_vm.docker("rm", "-f", cid)
    wait_for(
        lambda: ("tcp", "127.0.0.1", port) not in qemu_rules(ha_vm), "QEMU's rule to go with the container"
    )
    assert refused(port)


def test_a_port_is_bound_only_on_the_address_asked_for(ha_vm: VmMachine) -> None:
    other = other_host_address()
    local, there = free_port(), free_port(other)
    ha_vm.docker("run", "-d", "-p", f"{local}:80", *HTTPD)  # no address: 127.0.0.1
    ha_vm.docker("run", "-d", "-p", f"{other}:{there}:80", *HTTPD)
    assert forwards(ha_vm)[local][0] == forwards(ha_vm)[there][0] == "qemu"
    assert http_status(local) == 404
    assert refused(local, other)  # QEMU listens on 127.0.0.1 only
    with socket.create_connection((other, there), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.")
    assert refused(there)
    assert qemu_rules(ha_vm).get(("tcp", other, there)) == there


def test_forwards_are_reconciled_after_kill_9_of_the_host_agent(ha_vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    keep, gone = free_port(), free_port()
    ha_vm.docker("run", "-d", "-p", f"{keep}:80", *HTTPD)
    ha_vm.docker("run", "-d", "--name", "fwd-gone", "-p", f"{gone}:80", *HTTPD)
    pid = launcher.agent_pid(ha_vm.name)
    supervisor = launcher.supervisor_pid(ha_vm.name)
    if supervisor is not None:  # it would restart the agent at once (tests/vm/test_faults_host.py)
        os.kill(supervisor, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    try:
        dead_agent_then_repair(ha_vm, keep, gone)
    finally:  # the shared machine's next tests need an agent, whatever failed here
        if launcher.agent_pid(ha_vm.name) is None:
            launcher.status(ha_vm.name, repair=True)


def dead_agent_then_repair(vm: VmMachine, keep: int, gone: int) -> None:
    from pymachine.hostvm.hostagent import launcher

    wait_for(lambda: launcher.agent_pid(vm.name) is None, "the agent to die")
    assert http_status(gone) == 404  # QEMU carries the ports without the agent
    # the container goes while no host agent runs: only the guest knows
    rc, out, err = vm.ssh(
        'python3 -c "import socket; s = socket.socket(socket.AF_UNIX);'
        " s.connect('/run/pymachine/docker.sock');"
        " s.sendall(b'DELETE /containers/fwd-gone?force=1 HTTP/1.0\\r\\n\\r\\n'); print(s.recv(64))\""
    )
    assert rc == 0 and b" 204 " in out, (out, err)
    assert ("tcp", "127.0.0.1", gone) in qemu_rules(vm)  # stale until an agent reconciles
    assert launcher.status(vm.name, repair=True)["repaired"] is True
    wait_for(lambda: launcher.status(vm.name)["state"] == "ready", "the repaired agent")
    wait_for(lambda: ("tcp", "127.0.0.1", gone) not in qemu_rules(vm), "the stale rule to be removed")
    assert qemu_rules(vm) == {("tcp", "127.0.0.1", keep): keep}  # none stale, none missing
    assert refused(gone)
    assert http_status(keep) == 404
    assert forwards(vm) == {keep: ("qemu", "ok")}


def udp_answer(port: int, payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(1024)
        except TimeoutError:
            return None  # UDP may drop (the relay starting): the caller asks again


def test_a_udp_port_answers(ha_vm: VmMachine) -> None:
    echo = udp_echo_binary()
    if echo is None:
        pytest.skip("no gcc with a static libc on this host to build tests/support/udp_echo.c")
    port = free_port()
    ha_vm.docker(
        "create", "--name", "fwd-udp", "-p", f"{port}:53/udp", "pymachine/busybox", "/udp_echo", "53"
    )
    ha_vm.docker("cp", str(echo), "fwd-udp:/udp_echo")
    ha_vm.docker("start", "fwd-udp")
    # libslirp drops guest UDP on a restrict=on network: UDP is carried over the SSH link, bound on 127.0.0.1
    assert forwards(ha_vm)[port] == ("ssh", "ok")
    assert ("udp", "127.0.0.1", port) not in qemu_rules(ha_vm)
    assert (
        wait_for(lambda: udp_answer(port, b"ping"), "an echo through the published UDP port", 60)
        == b"echo:ping"
    )
    ha_vm.docker("rm", "-f", "fwd-udp")
    assert udp_answer(port, b"ping") is None


@contextlib.contextmanager
def monitor_unreachable(vm: VmMachine):  # type: ignore[no-untyped-def]
    """QEMU's QMP socket moved aside: every monitor command fails as with a QEMU that does not answer."""
    from pymachine.hostvm import paths

    qmp = paths.machine(vm.name).qmp_socket
    aside = qmp.with_name(qmp.name + ".aside")
    os.rename(qmp, aside)
    try:
        yield
    finally:
        os.rename(aside, qmp)


def test_the_ssh_path_when_the_monitor_is_unavailable(ha_vm: VmMachine) -> None:
    port = free_port()
    with monitor_unreachable(ha_vm):
        cid = ha_vm.docker("run", "-d", "-p", f"{port}:80", *HTTPD).stdout.strip()
        assert forwards(ha_vm)[port] == ("ssh", "ok")
        assert http_status(port) == 404
    assert ("tcp", "127.0.0.1", port) not in qemu_rules(ha_vm)
    ha_vm.docker("rm", "-f", cid)
    wait_for(lambda: refused(port), "the agent's listener to close")
    # the monitor is back: the next port takes the QEMU path again
    again = free_port()
    ha_vm.docker("run", "-d", "-p", f"{again}:80", *HTTPD)
    assert forwards(ha_vm)[again] == ("qemu", "ok")
    assert http_status(again) == 404
