"""`pymachine` entry point: parse, dispatch, and turn every error into a message and an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pymachine.hostvm.errors import PymachineError

# Each module registers its verbs on the sub-parser; one module per area, owned by that area.
VERB_MODULES = (
    "pymachine.app.cli.image_cmd",
    "pymachine.app.cli.machine_cmd",
    "pymachine.app.cli.container_cmd",
    "pymachine.app.cli.gui_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to do, as for every other bad input.
        self.exit(2, f"error: {message}\nhint: run '{self.prog} --help' for usage\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pymachine", description="Run containers in a lightweight Linux VM.")
    parser.add_argument("--debug", action="store_true", help="verbose logging to stderr")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug or os.environ.get("PYMACHINE_DEBUG") else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PymachineError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
