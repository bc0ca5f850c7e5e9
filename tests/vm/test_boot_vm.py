"""The guest's cold boot as the init runs it (issue 14, "cold boot faster"), read from the session machine.

- The kernel modules the engine's nftables ruleset needs load with the init's one `modprobe -a`. Left to the
  kernel's autoload, each missing one aborted the agent's `nft -f` transaction, which nftables replayed after
  a modprobe exec of its own: 21 execs at every boot. /proc/modules lists the newest module first, so a module
  loaded by that `modprobe -a` comes after its last module (nf_conntrack_netlink); an autoloaded one comes
  before.
- What only containers and the power button need (overlay, veth, fuse, button, evdev, virtio_balloon) loads in
  a second `modprobe -a` once the agent serves, off the boot's critical path; it does load.
- The agent says in its log how long its start took.
"""

from __future__ import annotations

import time

from support.machines import StartedMachine

from pymachine.hostvm import ssh

RULESET_MODULES = ("nf_tables", "nft_chain_nat", "nft_fib_ipv4", "nft_masq", "nft_ct", "nft_nat", "nf_nat")


def test_boot_loads_the_ruleset_modules_up_front(
    machine: StartedMachine,
) -> None:
    deadline = time.monotonic() + 180  # the second modprobe may still run on a machine that just booted
    while True:
        status, out, err = ssh.run(
            machine.name,
            "cat /run/pymachine-init.log; echo ===; cut -d' ' -f1 /proc/modules; echo ===;"
            " grep 'serving Docker API' /var/log/pymachine-agent.log | tail -1",
        )
        assert status == 0, err
        if b"later modules loaded" in out or time.monotonic() > deadline:
            break
        time.sleep(1)
    timeline, modules, serving = out.decode().split("===\n")
    newest_first = modules.split()
    later = ("overlay", "veth", "fuse", "evdev", "virtio_balloon")
    missing = [m for m in ("nf_conntrack_netlink", *RULESET_MODULES, *later) if m not in newest_first]
    assert missing == [], f"not loaded: {missing}"
    last = newest_first.index("nf_conntrack_netlink")
    autoloaded = [m for m in RULESET_MODULES if newest_first.index(m) < last]
    assert autoloaded == [], f"loaded after the init's modprobe (the kernel autoloaded them): {autoloaded}"
    steps = [line.split(" ", 1)[1] for line in timeline.splitlines()]
    assert steps.index("modules") < steps.index("agent"), timeline  # its engine programs nftables at once
    assert steps.index("agent") < steps.index("later modules") < steps.index("later modules loaded"), timeline
    assert "s after its start)" in serving, serving
