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

import json

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


# Whether a process has OPENSSL_ia32cap set: sshd's setproctitle moves its environment (and writes its title
# over the one /proc/PID/environ shows), so its writable memory is searched for the variable instead.
HAS_MASK = """
import re, sys
pid, found = int(sys.argv[1]), 0
wanted = re.compile(rb"(?:^|\\0)OPENSSL_ia32cap=~0x1000020000000000:~0x128\\0")
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if perms.startswith("rw"):
            start, end = (int(x, 16) for x in span.split("-"))
            mem.seek(start)
            try:
                found += wanted.search(mem.read(end - start)) is not None
            except OSError:
                pass
print(pid, int(found > 0))
"""


def test_openssl_takes_its_integer_code_under_tcg_only(machine: StartedMachine) -> None:
    """The init gives sshd and the agent OPENSSL_ia32cap where the CPU is QEMU's TCG (its AVX2/SSSE3 code is
    several times slower there), and leaves OpenSSL alone on KVM."""
    status, out, err = ssh.run(
        machine.name,
        "grep -m1 'model name' /proc/cpuinfo; echo ===;"
        # sshd's listener (the init's child) and the agent; anchored: this shell's command line names it too
        f" for p in $(pgrep -x -P 1 sshd) $(pgrep -f '^/usr/bin/python3 -S -m pymachine_agent serve'); do"
        f"  python3 -c '{HAS_MASK}' $p;"
        " done",
    )
    assert status == 0, err
    cpu, found = out.decode().split("===\n")
    seen = dict(line.split() for line in found.splitlines())
    assert len(seen) == 2, out  # sshd's listener and the agent
    if "QEMU TCG CPU" in cpu:
        assert set(seen.values()) == {"1"}, out
    else:
        assert set(seen.values()) == {"0"}, out


def test_start_reads_the_share_report_from_the_agent_not_an_exec(machine: StartedMachine) -> None:
    """`start` warns of a share the init could not mount. It asks the guest agent for the init's report (no
    shell forked in the booting guest); what the agent serves is the file the init wrote."""
    from pymachine.hostvm import machines

    client = ssh.connect(machine.name)
    try:
        served = machines._agent_share_report(client)
        status, out, err = ssh.exec_command(client, "cat /run/pymachine/shares.json 2>/dev/null", timeout=30)
    finally:
        client.close()
    assert served is not None, "the agent did not serve the share report"
    assert served == (json.loads(out) if status == 0 and out.strip() else []), (served, out, err)
    assert served, "the session machine shares a folder: the report lists it"
