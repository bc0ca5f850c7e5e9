"""`pymachine create NAME --driver ssh --host USER@HOST[:PORT]`: the options and the rendering of a machine
on an existing host. The logic lives in `pymachine.hostvm.remote_host`."""

from __future__ import annotations

import argparse

from pymachine.app.cli import render


def add_create_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("machines on other hosts (--driver ssh)")
    g.add_argument("--host", metavar="USER@HOST[:PORT]", help="an existing Linux host to run the engine on")
    g.add_argument("--ssh-key", metavar="FILE", help="private key to log in with (default ~/.ssh/id_ed25519)")
    g.add_argument(
        "--host-key",
        metavar="KEY",
        help="the host's key to pin: a SHA256: fingerprint, a public key line or a .pub file "
        "(default: trust on first use, shown)",
    )


def wanted(args: argparse.Namespace) -> bool:
    return args.driver == "ssh" or bool(getattr(args, "host", None))


def create(args: argparse.Namespace, start) -> int:  # type: ignore[no-untyped-def]
    from pymachine.hostvm import remote_host
    from pymachine.hostvm.errors import UsageError

    if args.driver not in (None, "ssh"):
        raise UsageError(f"--host applies to --driver ssh, not {args.driver}")
    if not args.host:
        raise UsageError("--driver ssh needs the host: --host USER@HOST[:PORT]")
    ignored = [f"--{k.replace('_', '-')}" for k in ("cpus", "memory", "disk", "connect") if getattr(args, k)]
    if args.mount or ignored:
        raise UsageError(
            f"{', '.join(ignored + (['--mount'] if args.mount else []))} do not apply to a machine on an "
            "existing host: it has the host's CPUs, memory and disk, and sees the host's own folders"
        )
    found = remote_host.create(args.name, args.host, args.ssh_key, args.host_key, render.progress)
    render.finish()
    print(f"created machine '{args.name}' on {found['host']}")
    how = {
        "systemd": "a systemd unit",
        "cron": "a cron @reboot entry",
        "initd": "an init.d script",
    }[found["supervisor"]]
    print(f"the agent runs under {how} there, and starts again when the host reboots")
    for warning in found["warnings"]:
        print(f"warning: {warning}")
    if args.start:
        return start(args)
    return 0
