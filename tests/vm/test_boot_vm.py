"""The guest's cold boot as the init runs it (issue 14, "cold boot faster"), read from the session machine.

- The kernel modules the engine's nftables ruleset needs load with the init's one `modprobe -a`. Left to the
  kernel's autoload, each missing one aborted the agent's `nft -f` transaction, which nftables replayed after
  a modprobe exec of its own: 21 execs at every boot. /proc/modules lists the newest module first, so a module
  loaded by that `modprobe -a` comes after its last module (virtio_balloon); an autoloaded one comes before.
- The agent starts right after sshd, the modules once it answers (it asks the init), and its engine (the
  bridge, nftables) once they are in.
- The agent says in its log how long its start took.
"""

from __future__ import annotations

from support.machines import StartedMachine

from pymachine.hostvm import ssh

RULESET_MODULES = ("nf_tables", "nft_chain_nat", "nft_fib_ipv4", "nft_masq", "nft_ct", "nft_nat", "nf_nat")


def test_boot_loads_the_ruleset_modules_up_front(
    machine: StartedMachine,
) -> None:
    status, out, err = ssh.run(
        machine.name,
        # the modules load once the agent answers, its engine starts after them: maybe after `start` returned
        "for i in $(seq 1200); do grep -q 'engine started' /var/log/pymachine-agent.log && break;"
        " sleep 0.1; done;"
        "cat /run/pymachine-init.log; echo ===; cut -d' ' -f1 /proc/modules; echo ===;"
        " grep 'serving Docker API' /var/log/pymachine-agent.log | tail -1; echo ===;"
        " grep 'engine started' /var/log/pymachine-agent.log | tail -1",
    )
    assert status == 0, err
    timeline, modules, serving, started = out.decode().split("===\n")
    newest_first = modules.split()
    missing = [m for m in ("virtio_balloon", *RULESET_MODULES) if m not in newest_first]
    assert missing == [], f"not loaded: {missing}"
    autoloaded = [m for m in RULESET_MODULES if newest_first.index(m) < newest_first.index("virtio_balloon")]
    assert autoloaded == [], f"loaded after the init's modprobe (the kernel autoloaded them): {autoloaded}"
    steps = [line.split()[1] for line in timeline.splitlines()]
    # the agent first (it answers without them), the modules once it asks; its engine starts after them
    assert steps.index("sshd") < steps.index("agent") < steps.index("modules"), timeline
    assert "s after its start)" in serving, serving
    assert "(modules " in started and "s after its start)" in started, started
