"""Run the compat suite against a real VM through the host-forwarded engine socket (issue 6's vm-tier run).

    python3 tests/compat/vm_run.py [pytest args...]      # e.g. -k "test_cli or test_dockerpy"

Creates and starts a machine (direct-QEMU driver) in a throwaway PYMACHINE_HOME that shares the image cache,
points the suite at `<home>/m/<name>/docker.sock` with PYMACHINE_COMPAT_DOCKER_HOST, then deletes the machine.
Scenarios that need the host's filesystem or loopback from inside the guest (bind mounts of host folders, a
registry on the host's 127.0.0.1) cannot pass there by design: the VM is a different machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from support.machines import SHARED_CACHE, home_env, new_home, unique_name  # noqa: E402


def main(argv: list[str]) -> int:
    from pymachine.hostvm import machines

    home, name = new_home(), unique_name("cv")
    with home_env(home):
        machines.create(name, driver="qemu", progress=lambda m: print(m, file=sys.stderr))
        try:
            machines.start(name, lambda m: print(m, file=sys.stderr))
            sock = home / "m" / name / "docker.sock"
            env = {
                **os.environ,
                "PYMACHINE_HOME": str(home),
                "PYMACHINE_CACHE": str(SHARED_CACHE),
                "PYMACHINE_COMPAT_DOCKER_HOST": f"unix://{sock}",
            }
            paths = [] if any(a.endswith(".py") or "/" in a for a in argv) else [str(HERE)]
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *paths, *argv]
            return subprocess.run(cmd, env=env, cwd=HERE.parent.parent).returncode
        finally:
            machines.delete(name, force=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
