"""`pymachine version` (and `pymachine --version`): client, API, guest image recipe, guest agent, and the
machine's engine when it runs. Rendering only: the values come from `pymachine.hostvm.version`."""

from __future__ import annotations

import argparse
import json

from pymachine.hostvm import version


def short() -> str:
    """`pymachine --version`: one line, no machine needed (like `docker --version`)."""
    info = version.collect()
    return (
        f"pymachine {info.client} (API {info.api_version}, agent {info.agent_version}, "
        f"image recipe {info.guest_image_recipe[:12]})"
    )


def render(info: version.VersionInfo) -> str:
    lines = [
        "Client:",
        f" Version:            {info.client}",
        f" API version:        {info.api_version}",
        f" Guest image recipe: {info.guest_image_recipe}",
        f" Agent version:      {info.agent_version} (protocol {info.agent_protocol}, "
        f"sources {info.agent_checksum[:12]})",
        "",
        f"Server: machine '{info.machine}'",
    ]
    if info.engine is None:
        lines.append(f" not reachable: {info.engine_error}")
    else:
        e = info.engine
        lines += [
            f" Engine version:     {e.version}",
            f" API version:        {e.api_version} (minimum {e.min_api_version})",
            f" Kernel:             {e.kernel}",
            f" OS/Arch:            {e.os}/{e.arch}",
        ]
    return "\n".join(lines)


def _version(args: argparse.Namespace) -> int:
    info = version.collect(args.machine)
    if args.format == "json":
        print(json.dumps(info.to_json(), sort_keys=True))
    else:
        print(render(info))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from pymachine.hostvm.config import DEFAULT_NAME

    p = sub.add_parser("version", help="versions of the client, the guest image and agent, and the engine")
    p.add_argument("--machine", default=DEFAULT_NAME, metavar="NAME", help="the machine (default: default)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_version)
