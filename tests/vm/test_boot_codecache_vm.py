"""The booted guest's agent takes its dataclass methods' code and its modules' regular expressions from the
image (issue 14, cold boot, fifth pass).

The image build compiles them (pymachine_agent/codecache.py) with the guest's own Python; the agent's start
then compiles none of the dataclass methods. A cache made by another interpreter, or one that the build failed
to write, would show here as methods compiled at start.
"""

from __future__ import annotations

import re

from support.machines import StartedMachine

from pymachine.hostvm import ssh


def test_the_agent_compiled_no_dataclass_method_at_its_start(machine: StartedMachine) -> None:
    status, out, err = ssh.run(
        machine.name,
        "grep 'dataclass methods at start' /var/log/pymachine-agent.log | tail -1;"
        " ls -l /opt/pymachine/agent/pymachine_agent/__pycache__/codecache.marshal",
    )
    assert status == 0, err
    line = out.decode()
    found = re.search(
        r"at start: (\d+) from the image's code cache, (\d+) compiled; regular expressions: (\d+)", line
    )
    assert found, f"the agent did not report its code cache:\n{line}"
    stored, compiled, patterns = (int(n) for n in found.groups())
    assert stored > 100 and compiled == 0, line
    # The modules' own patterns and the API routes' come from it; a few made at run time are compiled.
    assert patterns > 100, line
