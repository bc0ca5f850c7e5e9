"""`pymachine set NAME [--cpus N] [--memory 4G] [--disk 40G]`: change a machine's settings, effective at its
next start (as `podman machine set`). Rendering only: validation and the write are `machines.configure`."""

from __future__ import annotations

import argparse
import sys

from pymachine.hostvm import machine_settings, machines
from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "set",
        help="change a machine's CPUs, memory or disk size (at its next start)",
        description="Change a machine's settings. They apply at its next start; a running machine keeps its "
        "old ones until then (pymachine restart NAME applies them), and a saved state is thrown away (the "
        "next start boots cold). Shared folders: pymachine mount add|rm.",
    )
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.add_argument("--cpus", help="virtual CPUs (1 to the host's cores)")
    p.add_argument("--memory", help="memory, e.g. 4G, 1536M (at most the host's)")
    p.add_argument("--disk", help="disk size, e.g. 40G (it can only grow)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before throwing a saved state away")
    p.set_defaults(func=_set)


def _set(args: argparse.Namespace) -> int:
    request = machine_settings.SettingsRequest(cpus=args.cpus, memory=args.memory, disk=args.disk)
    if request == machine_settings.SettingsRequest():
        raise UsageError(
            "nothing to set", hint=f"e.g. pymachine set {args.name} --cpus 2 --memory 4G --disk 40G"
        )
    if not args.yes and sys.stdin.isatty():
        ctx = machine_settings.context(args.name)
        planned = machine_settings.plan(ctx.config, request, ctx.limits)  # its errors before the question
        if machine_settings.will_discard_saved_state(ctx, planned):
            answer = input(
                f"machine '{args.name}' has a saved state; new settings throw it away (the next start boots "
                "cold). Go on? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing changed")
                return 1
    print(machine_settings.describe(machines.configure(args.name, request)))
    return 0
