"""Entry point of the PyInstaller bundle's executables (`pymachine`, `pymachine-gui`, `git-remote-pymachine`),
chosen by the name it runs as (argv[0]; a link or copy under one of those names works the same).

A frozen executable is its own interpreter: pymachine starts helpers as `sys.executable -m MODULE ARGS` (the
host agent, the app at login), so `-m` is honoured here for pymachine's own modules; anything else is the
command.
"""

import os
import runpy
import sys


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "-m" and sys.argv[2].startswith("pymachine."):
        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    name = os.path.basename(sys.argv[0])
    if name.startswith("pymachine-gui"):
        from pymachine.app.gui.main import main as entry
    elif name.startswith("git-remote-pymachine"):  # git runs it for a remote `pymachine::APP`
        from pymachine.app.cli.git_remote import main as entry
    else:
        from pymachine.app.cli.main import main as entry
    return int(entry() or 0)


if __name__ == "__main__":
    sys.exit(main())
