"""Machine verbs: create, start, stop, restart, delete, list, inspect, ssh, doctor. Rendering only: the
logic lives in `pymachine.hostvm.machines`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from pymachine.app.cli import formats, remote_cmd, render
from pymachine.hostvm import doctor, machines, paths, share_hotplug, ssh
from pymachine.hostvm import status as statusmod
from pymachine.hostvm.config import DEFAULT_NAME, SHARE_TRANSPORTS, format_size, with_settings
from pymachine.hostvm.errors import NotFoundError, PymachineError
from pymachine.hostvm.machine_settings import pending_summary
from pymachine.hostvm.status import engine_summary, link_state, state_label  # noqa: F401 - the CLI's API

NAME_HELP = "the machine (default: %(default)s; --machine NAME or $PYMACHINE_MACHINE choose another)"


def add_name(p: argparse.ArgumentParser) -> None:
    """The optional machine NAME of a machine verb; %(default)s is the one build_parser chose."""
    p.add_argument("name", nargs="?", default=DEFAULT_NAME, help=NAME_HELP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create", help="create a machine", description="Create a machine (see --start).")
    add_name(p)
    p.add_argument("--cpus", help="virtual CPUs (default: Settings, else min(2, host cores))")
    p.add_argument("--memory", help="memory, e.g. 1G, 512M (default: Settings, else 1G)")
    p.add_argument("--disk", help="disk size, e.g. 8G (default: Settings, else 8G)")
    p.add_argument(
        "--driver", choices=None, help="libvirt, qemu or ssh (default: libvirt if libvirt-python is there)"
    )
    p.add_argument(
        "--connect", metavar="URI", help="libvirt URI (default qemu:///system as root, else session)"
    )
    p.add_argument(
        "--mount",
        action="append",
        metavar="PATH[:ro|:sync]",
        help="share a host folder at the same path in the VM (repeatable; :ro for read-only, :sync for a "
        "copy on the VM's disk kept in sync both ways: native speed, see docs/machines.md)",
    )
    p.add_argument(
        "--no-home-mount", action="store_true", help="do not share the home folder and the temp folder"
    )
    p.add_argument(
        "--share-transport",
        choices=SHARE_TRANSPORTS,
        help="how folders are shared (default auto: virtiofs, else 9p, else sshfs)",
    )
    p.add_argument(
        "--idle-suspend",
        metavar="MIN",
        help="pause the machine after MIN minutes without running containers or clients; "
        "the first connection resumes it (default 5; 0 = never)",
    )
    p.add_argument("--start", action="store_true", help="start it right away")
    remote_cmd.add_create_options(p)
    p.set_defaults(func=_create)

    p = sub.add_parser("mount", help="host folders shared with a machine: mount add|rm|list|transport NAME")
    verbs = p.add_subparsers(dest="mount_verb", required=True, metavar="add|rm|list|transport")
    for verb, text in (("add", "share PATH[:ro] (at the next start)"), ("rm", "stop sharing PATH")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("name")
        v.add_argument("path", metavar="PATH[:ro]" if verb == "add" else "PATH")
        if verb == "add":
            v.add_argument("--sync", action="store_true", help="a copy on the VM's disk, synced both ways")
        v.set_defaults(func=_mount_change)
    v = verbs.add_parser("transport", help="how the shares travel: auto, virtiofs, 9p or sshfs")
    v.add_argument("name")
    v.add_argument("transport", choices=SHARE_TRANSPORTS)
    v.set_defaults(func=_mount_transport)
    v = verbs.add_parser("list", help="the shares, their transport, and what waits for a restart")
    v.add_argument("name", nargs="?", default=DEFAULT_NAME)
    v.add_argument("--format", choices=("table", "json"), default="table")
    v.set_defaults(func=_mount_list)

    for verb, func, text in (
        ("start", _start, "start (resume a saved) machine and wait until it is ready"),
        ("stop", _stop, "stop a machine, saving its state for a fast start"),
        ("restart", _restart, "stop and start a machine"),
        ("inspect", _inspect, "a machine's details as JSON"),
    ):
        p = sub.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        add_name(p)
        if verb == "stop":
            p.add_argument(
                "--timeout",
                type=float,
                help="a power-off (--shutdown, or a state that cannot be saved): seconds to wait before "
                "forcing it off (default 30; 60 without an accelerator)",
            )
            p.add_argument("--shutdown", action="store_true", help="power off instead of saving the state")
        if verb == "start":
            p.add_argument("--cold", action="store_true", help="boot, throwing away any saved state")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "delete", help="delete a machine: VM, disk, keys", description="Delete a machine: VM, disk, keys."
    )
    add_name(p)
    p.add_argument("-f", "--force", action="store_true", help="also when it is running")
    p.set_defaults(func=_delete)

    p = sub.add_parser("list", help="list machines")
    p.add_argument("--format", default="table", help="table, json (JSON lines) or a Go template: '{{.name}}'")
    p.add_argument("-q", "--quiet", action="store_true", help="only the names")
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "ssh",
        help="a shell in a machine, or run a command: ssh [NAME] [-- CMD...]",
        description="A shell in a running machine, or run a command there; the remote exit status is "
        "passed through.",
        epilog="examples:\n  pymachine ssh dev\n  pymachine ssh dev -- uname -a",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="[NAME] [-- CMD...]",
        help="the machine (default: --machine NAME, else $PYMACHINE_MACHINE, else 'default') and the command",
    )
    p.set_defaults(func=_ssh)

    p = sub.add_parser("doctor", help="check this host for what machines need")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_doctor)


_progress = render.progress  # typed stage values as spinners on a terminal, lines otherwise


def _create(args: argparse.Namespace) -> int:
    if remote_cmd.wanted(args):
        return remote_cmd.create(args, _start)
    sizes, taken = with_settings(args.cpus, args.memory, args.disk)
    if taken:
        given = ", ".join(f"{k} {v}" for k, v in taken.items())
        _progress(f"using the defaults from {paths.settings_file()}: {given}")
    m = machines.create(
        args.name,
        sizes["cpus"],
        sizes["memory"],
        sizes["disk"],
        args.driver,
        args.connect,
        _progress,
        mounts=args.mount,
        home_mount=not args.no_home_mount,
        share_transport=args.share_transport,
        idle_suspend=args.idle_suspend,
    )
    render.finish()
    cpus = f"{m.cpus} CPU" + ("s" if m.cpus != 1 else "")
    sizes = f"{cpus}, {format_size(m.memory)} memory, {format_size(m.disk)} disk"
    print(f"created machine '{m.name}' ({sizes})")
    print(f"shared folders: {share_summary(m.shares)}")
    if args.start:
        return _start(args)
    return 0


def container_hint(verb: str, name: str, default: str) -> str:
    """docker's habit: `stop web` for a container. A NAME that is no machine may be one: say where its verb is
    (not when the name is the default machine's: a missing `default` is about the machine)."""
    return "" if name == default else f"a container? pymachine container {verb} {name}"


@contextlib.contextmanager
def _maybe_container(verb: str, args: argparse.Namespace) -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:
        extra = container_hint(verb, args.name, args.default_machine)
        if extra and not machines.exists(args.name):
            exc.hint = f"{exc.hint}; {extra}" if exc.hint else extra
        raise


def interrupted_start(name: str) -> PymachineError:
    """Ctrl-C in a start leaves a VM booting (libvirt's QEMU and the host agent are not in this terminal's
    process group): say so, and the two ways on."""
    return PymachineError(
        f"start of machine '{name}' interrupted: the VM may be left half started",
        hint=f"finish it: pymachine start {name}; or power it off: pymachine stop --shutdown {name}",
        exit_code=130,
    )


def _start(args: argparse.Namespace) -> int:
    with _maybe_container("start", args):
        try:
            m = machines.start(args.name, _progress, cold=getattr(args, "cold", False))
        except KeyboardInterrupt:
            raise interrupted_start(args.name) from None
    render.finish()
    print(f"machine '{m.name}' is running (ssh port {m.ssh_port}, {m.accelerator})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    with _maybe_container("stop", args):
        m = machines.stop(args.name, _progress, timeout=args.timeout, shutdown=args.shutdown)
    print(
        f"machine '{args.name}' is " + ("saved (the next start resumes it)" if m.saved_state else "stopped")
    )
    return 0


def _restart(args: argparse.Namespace) -> int:
    m = machines.restart(args.name, _progress)
    render.finish()
    print(f"machine '{m.name}' is running (ssh port {m.ssh_port})")
    return 0


def _delete(args: argparse.Namespace) -> int:
    machines.delete(args.name, force=args.force)
    print(f"deleted machine '{args.name}'")
    return 0


def _host_agent_status(m: machines.Machine) -> dict[str, Any] | None:
    return statusmod.host_agent_status(m)


def list_json(m: machines.Machine, st: dict[str, Any] | None) -> dict[str, Any]:
    return statusmod.MachineStatus.of(m, st).to_json()


def list_rows(found: list[tuple[machines.Machine, dict[str, Any] | None]]) -> list[tuple[str, ...]]:
    rows = [("NAME", "STATE", "CPUS", "MEMORY", "DISK", "SSH PORT", "ACCEL", "DRIVER", "PORTS", "ENGINE")]
    for m, status in found:
        rows.append(
            (
                m.name,
                ", ".join(filter(None, (state_label(m, status), pending_summary(m)))),
                str(m.cpus),
                format_size(m.memory),
                format_size(m.disk),
                str(m.ssh_port or "-"),
                m.accelerator or "-",
                m.driver,
                statusmod.ports_summary(status),
                "; ".join([engine_summary(status), *m.share_problems]),
            )
        )
    return rows


def render_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _inspect(args: argparse.Namespace) -> int:
    m = machines.get(args.name)
    status = _host_agent_status(m)
    shown = {**m.to_json(), "state": state_label(m, status), "pending_summary": pending_summary(m)}
    print(json.dumps({**shown, "host_agent": status}, indent=2, ensure_ascii=False))
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.quiet:
        for m in machines.list_machines():
            print(m.name)
        return 0
    found = [(m, _host_agent_status(m)) for m in machines.list_machines()]
    if args.format != "table":  # json: one machine per line, as docker's --format json; or a Go template
        text = formats.format_rows([list_json(m, st) for m, st in found], [], args.format)
        if text:
            print(text)
        return 0
    print(render_table(list_rows(found)))
    if not found:  # a header alone leaves a newcomer guessing; stderr, so that the table's stdout stays as is
        print(
            "no machines yet: pymachine create dev --start (or pymachine run … makes 'default')",
            file=sys.stderr,
        )
    return 0


def split_ssh_args(rest: list[str], default: str = DEFAULT_NAME) -> tuple[str, list[str]]:
    """`[NAME] [-- CMD...]` → (name, command); a first word after NAME without `--` starts the command too.
    Without NAME, `default`: the machine every verb acts on (--machine, $PYMACHINE_MACHINE)."""
    if rest and rest[0] == "--":
        return default, rest[1:]
    if not rest:
        return default, []
    name, tail = rest[0], rest[1:]
    return name, tail[1:] if tail and tail[0] == "--" else tail


def _ssh(args: argparse.Namespace) -> int:
    name, command = split_ssh_args(args.rest, args.default_machine)
    m = machines.get(name)
    if m.state != "running":
        raise statusmod.not_running(m)
    machines.wake(name, "pymachine ssh")  # a machine the resource saver paused answers no SSH until resumed
    argv = ssh.ssh_argv(name, command or None)
    sys.stdout.flush()
    # The system ssh gives a real PTY, job control and stdin; its exit status is the remote command's.
    os.execv(argv[0], argv)
    return 0  # not reached


def share_summary(shares: list[dict[str, Any]]) -> str:
    """`/a (ro), /b over virtiofs; /src (synced copy)`: each share under its own transport (a sync share is
    not on the machine's live transport)."""
    if not shares:
        return "none"
    by_transport: dict[str, list[str]] = {}
    for s in shares:
        by_transport.setdefault(s["transport"], []).append(s["path"] + (" (ro)" if s["readonly"] else ""))
    return "; ".join(
        ", ".join(found) + (" (synced copy)" if transport == "sync" else f" over {transport}")
        for transport, found in by_transport.items()
    )


def _mount_change(args: argparse.Namespace) -> int:
    add = args.mount_verb == "add"
    path = args.path + (":sync" if add and args.sync and not args.path.endswith(":sync") else "")
    m, change = (machines.mount_add if add else machines.mount_rm)(args.name, path)
    done = "shares" if add else "no longer shares"
    print(f"machine '{m.name}' {done} {args.path} ({share_hotplug.phrase(change, m.name, add)})")
    return 0


def _mount_transport(args: argparse.Namespace) -> int:
    m, running = machines.set_share_transport(args.name, args.transport)
    when = f"restart to apply: pymachine restart {m.name}" if running else "applies at the next start"
    print(f"machine '{m.name}' shares folders over {args.transport} ({when})")
    return 0


def mount_rows(m: machines.Machine) -> list[tuple[str, ...]]:
    rows = [("PATH", "MODE", "TRANSPORT", "STATUS")]  # STATUS: pending, or how a sync share stands
    for s in m.shares:
        rows.append((s["path"], "ro" if s["readonly"] else "rw", s["transport"], share_hotplug.note(s)))
    return rows


def _mount_list(args: argparse.Namespace) -> int:
    m = machines.get(args.name)
    if args.format == "json":
        print(json.dumps(m.shares, indent=2))
        return 0
    if not m.shares:
        print(f"machine '{m.name}' shares no folders (add one: pymachine mount add {m.name} PATH)")
        return 0
    print(render_table(mount_rows(m)))
    for problem in m.share_problems:
        print(f"warning: {problem}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    checks = doctor.run_checks()
    if args.format == "json":
        print(json.dumps([c.to_json() for c in checks], indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            print(f"[{mark}] {c.name}: {c.detail}")
            if c.hint and not c.ok:
                print(f"       hint: {c.hint}")
    return 0 if all(c.ok or not c.required for c in checks) else 1
