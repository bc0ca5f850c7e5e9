"""A published port answers the first request after `docker run` returns even when the container's server
binds late, on the QEMU path (guest-agent network/young.py): slirp accepts the host's client at once, and
without the guest's relay the container's refusal reached that client as "connection reset by peer"."""

from __future__ import annotations

from support.hostagent_vm import VmMachine, free_port, http_status, wait_for


def test_a_server_that_binds_late_answers_the_first_request(ha_vm: VmMachine) -> None:
    from pymachine.hostvm.hostagent import launcher

    port = free_port()
    late = "sleep 3; exec httpd -f -p 80 -h /bin"  # binds well after `run` returns, even under load
    ha_vm.docker("run", "-d", "-p", f"{port}:80", "pymachine/busybox", "sh", "-c", late)
    paths = {f["host_port"]: f["path"] for f in launcher.status(ha_vm.name)["forwards"]}
    assert paths[port] == "qemu"
    assert http_status(port) == 404  # the first request: no sleep, no retry on this side
    assert http_status(port) == 404  # and the next

    def dnat_took_over() -> bool:  # the full-speed path from here on: the kernel's DNAT, no relay
        code, out, _ = ha_vm.ssh("nft list chain ip pymachine published")
        rules = [line for line in out.decode().splitlines() if f"dport {port} " in line]
        return code == 0 and len(rules) == 1 and "dnat to" in rules[0]

    wait_for(dnat_took_over, "the DNAT rule to take over from the young port's relay")
