"""`pymachine gui`: the desktop app (PySide6), or `--screenshot DIR` to render each main view to PNG."""

from __future__ import annotations

import argparse

from pymachine.hostvm.errors import PymachineError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="open the desktop app")
    p.add_argument("--screenshot", metavar="DIR", help="render each main view to DIR/<view>.png and exit")
    p.add_argument("--engine", metavar="URL", help="show this engine (unix://...) instead of the machines'")
    p.set_defaults(func=_gui)


def _gui(args: argparse.Namespace) -> int:
    try:
        import PySide6  # noqa: F401

        from pymachine.app.gui import main as gui_main
    except ImportError as exc:
        raise PymachineError(
            f"the desktop app needs PySide6 ({exc})", hint="pip install 'pymachine[gui]'"
        ) from exc
    argv = []
    if args.screenshot:
        argv += ["--screenshot", args.screenshot]
    if args.engine:
        argv += ["--engine", args.engine]
    return gui_main.main(argv)
