"""`python -m pymachine.hostvm.hostagent NAME`: run the host agent for machine NAME in the foreground."""

from __future__ import annotations

import sys

from .daemon import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m pymachine.hostvm.hostagent NAME", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
