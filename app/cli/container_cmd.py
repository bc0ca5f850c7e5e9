"""Container verbs: run, ps, logs, exec, rm, build, images, pull, load, docker-env (top level) and the same
plus `stop` under `pymachine container …` (a top-level `stop` is the machine's). Rendering only: the work is
docker-py through `pymachine.hostvm.containers`."""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from pymachine.app.cli import container_build
from pymachine.hostvm import containers, images_io
from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.errors import PymachineError

Handler = Callable[[argparse.Namespace], int]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_verbs(sub: argparse._SubParsersAction, include_stop: bool) -> None:
    def verb(name: str, func: Handler, text: str, fmt: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--machine", default=DEFAULT_NAME, metavar="NAME", help="the machine (default: default)"
        )
        if fmt:
            p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=func)
        return p

    p = verb("run", _run, "run a container (creates and starts the default machine if needed)", fmt=True)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print its id")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER[/udp]")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="VOLUME:PATH[:ro]")
    p.add_argument("--name")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = verb("ps", _ps, "list containers", fmt=True)
    p.add_argument("-a", "--all", action="store_true", help="also stopped ones")

    p = verb("logs", _logs, "a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("container")

    p = verb("exec", _exec, "run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)

    if include_stop:
        p = verb("stop", _stop, "stop containers", fmt=True)
        p.add_argument("-t", "--time", type=int, default=10, help="seconds before SIGKILL")
        p.add_argument("containers", nargs="+")

    p = verb("rm", _rm, "remove containers", fmt=True)
    p.add_argument("-f", "--force", action="store_true", help="also running ones")
    p.add_argument("containers", nargs="+")

    p = verb("build", _build, "build an image from a Dockerfile (the build runs in the machine)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]", help="repeatable")
    p.add_argument("-f", "--file", metavar="DOCKERFILE", help="default: PATH/Dockerfile")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]", help="repeatable")
    p.add_argument("--target", metavar="STAGE", help="the stage to build")
    p.add_argument("--no-cache", action="store_true", help="run every step again")
    p.add_argument("path", metavar="PATH", help="the build context: a folder on this host")

    verb("images", _images, "list images", fmt=True)

    p = verb("pull", _pull, "pull an image (the builtin pymachine/* images are built locally)", fmt=True)
    p.add_argument("image")

    p = verb("load", _load, "load images from a docker-archive tarball", fmt=True)
    p.add_argument("-i", "--input", required=True, metavar="FILE")

    p = sub.add_parser("docker-env", help="print shell exports pointing docker at a machine: eval $(...)")
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.set_defaults(func=_docker_env)


def register(sub: argparse._SubParsersAction) -> None:
    _add_verbs(sub, include_stop=False)
    group = sub.add_parser("container", help="container verbs (run, ps, logs, exec, stop, rm, ...)")
    _add_verbs(group.add_subparsers(dest="container_verb", metavar="VERB", parser_class=type(group)), True)


# -- helpers ------------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace, create: bool = False):  # type: ignore[no-untyped-def]
    if create:
        return containers.client(args.machine, ensure=True, progress=_progress)
    from pymachine.hostvm import machines
    from pymachine.hostvm.hostagent import launcher

    machine = machines.get(args.machine)  # NotFoundError with a hint when it does not exist
    if machine.state != "running":
        raise PymachineError(
            f"machine '{args.machine}' is {machine.state}", hint=f"start it: pymachine start {args.machine}"
        )
    launcher.ensure_running(args.machine, _progress)  # repairs a dead host agent
    return containers.client(args.machine, ensure=False)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    cells = [[h for h, _ in columns]] + [[str(r.get(k, "")) for _, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    if getattr(args, "format", "table") == "json":
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, columns)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000  # type: ignore[assignment]
    return str(n)


# -- verbs --------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    dc = _client(args, create=True)
    opts = containers.RunOptions(
        image=args.image,
        command=args.command,
        name=args.name,
        detach=args.detach,
        remove=args.rm,
        ports=args.publish,
        env=args.env,
        volumes=args.volume,
        interactive=args.interactive,
        tty=args.tty,
    )
    container = containers.create(dc, opts, _progress)
    if args.detach:
        containers.start(container)
        container.reload()
        if args.format == "json":
            print(json.dumps(containers.summary(container)))
        else:
            print(container.id)
        return 0
    try:
        if args.interactive or args.tty:
            sock = dc.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            containers.start(container)
            _pump_terminal(sock, args.tty, args.interactive)
        else:
            containers.start(container)
            _stream_logs(container)
        with containers.api_errors("waiting for the container"):
            result = container.wait()
        return int(result.get("StatusCode", 0))
    finally:
        if args.rm:
            with containers.api_errors():
                container.remove(force=True)


def _stream_logs(container: Any, follow: bool = True) -> None:
    """stdout to stdout, stderr to stderr (two log streams, as `docker logs` keeps them apart)."""

    def copy(stdout: bool, out: Any) -> None:
        for chunk in container.logs(stdout=stdout, stderr=not stdout, stream=True, follow=follow):
            out.write(chunk)
            out.flush()

    t = threading.Thread(target=copy, args=(False, sys.stderr.buffer), daemon=True)
    t.start()
    copy(True, sys.stdout.buffer)
    t.join(timeout=5)


def _pump_terminal(sock: Any, tty: bool, interactive: bool) -> None:
    """Join this terminal to a hijacked attach/exec stream (raw mode with -t; frames demuxed without it)."""
    raw = getattr(sock, "_sock", sock)
    saved = None
    if tty and sys.stdin.isatty():
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno())
    try:
        buf = b""
        inputs = [raw] + ([sys.stdin.fileno()] if interactive else [])
        while True:
            ready, _, _ = select.select(inputs, [], [])
            if raw in ready:
                data = raw.recv(65536)
                if not data:
                    break
                if tty:
                    os.write(1, data)
                else:
                    buf += data
                    while len(buf) >= 8:
                        stream, size = buf[0], struct.unpack(">I", buf[4:8])[0]
                        if len(buf) < 8 + size:
                            break
                        os.write(2 if stream == 2 else 1, buf[8 : 8 + size])
                        buf = buf[8 + size :]
            if interactive and sys.stdin.fileno() in ready:
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    inputs.remove(sys.stdin.fileno())
                    try:
                        raw.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                else:
                    raw.sendall(data)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def ps_rows(found: list[Any], forwards: list[dict[str, Any]], now: Any = None) -> list[dict[str, Any]]:
    """`ps` rows: the façade's summary with Docker's STATUS text (`Up 5 seconds`, `Exited (0) 2 minutes ago`)
    in place of its short one."""
    rows = [containers.summary(c, forwards) for c in found]
    for row, c in zip(rows, found, strict=True):
        row["Status"] = containers.status_text(c.attrs.get("State") or {}, now)
    return rows


def _ps(args: argparse.Namespace) -> int:
    dc = _client(args)
    with containers.api_errors():
        found = dc.containers.list(all=args.all)
    from pymachine.hostvm.hostagent import launcher

    forwards = launcher.status(args.machine, repair=False).get("forwards") or []
    rows = ps_rows(found, forwards)
    cols = [
        ("CONTAINER ID", "ID"),
        ("IMAGE", "Image"),
        ("COMMAND", "Command"),
        ("STATUS", "Status"),
        ("PORTS", "Ports"),
        ("NAMES", "Names"),
    ]
    if args.format == "table":
        for r in rows:
            r["Command"] = '"' + (r["Command"][:20] + "…" if len(r["Command"]) > 20 else r["Command"]) + '"'
    _emit(args, rows, cols)
    return 0


def _get(dc: Any, ref: str) -> Any:
    with containers.api_errors():
        return dc.containers.get(ref)


def _logs(args: argparse.Namespace) -> int:
    dc = _client(args)
    _stream_logs(_get(dc, args.container), follow=args.follow)
    return 0


def _exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise PymachineError("exec needs a command", hint="pymachine exec CONTAINER sh -c '...'")
    dc = _client(args)
    container = _get(dc, args.container)
    with containers.api_errors(f"exec in {args.container}"):
        exec_id = dc.api.exec_create(container.id, args.command, stdin=args.interactive, tty=args.tty)["Id"]
        sock = dc.api.exec_start(exec_id, tty=args.tty, socket=True)
    _pump_terminal(sock, args.tty, args.interactive)
    with containers.api_errors():
        code = dc.api.exec_inspect(exec_id).get("ExitCode")
    return int(code or 0)


def _stop(args: argparse.Namespace) -> int:
    dc = _client(args)
    for ref in args.containers:
        c = _get(dc, ref)
        with containers.api_errors(f"stopping {ref}"):
            c.stop(timeout=args.time)
        print(ref)
    return 0


def _rm(args: argparse.Namespace) -> int:
    dc = _client(args)
    for ref in args.containers:
        c = _get(dc, ref)
        with containers.api_errors(f"removing {ref}"):
            c.remove(force=args.force)
        print(ref)
    return 0


def _build(args: argparse.Namespace) -> int:
    return container_build.run(args, lambda: _client(args, create=True), _progress)


def _images(args: argparse.Namespace) -> int:
    dc = _client(args)
    with containers.api_errors():
        found = dc.images.list()
    rows = [row for img in found for row in containers.image_summary(img)]
    if args.format == "table":
        for r in rows:
            r["Size"] = _size(int(r["Size"] or 0))
    _emit(args, rows, [("REPOSITORY", "Repository"), ("TAG", "Tag"), ("IMAGE ID", "ID"), ("SIZE", "Size")])
    return 0


def _pull(args: argparse.Namespace) -> int:
    dc = _client(args, create=True)
    builtin = containers.builtin_name(args.image)
    if builtin:
        loaded = images_io.load_builtin(dc, builtin, _progress)
    else:
        repo, _, tag = args.image.partition(":")
        with containers.api_errors(f"pulling {args.image}"):
            img = dc.images.pull(repo, tag=tag or "latest")
        loaded = img.tags or [img.short_id]
    _emit(args, [{"Image": t} for t in loaded], [("IMAGE", "Image")])
    return 0


def _load(args: argparse.Namespace) -> int:
    dc = _client(args, create=True)
    loaded = images_io.load(dc, args.input)
    _emit(args, [{"Image": t} for t in loaded], [("LOADED", "Image")])
    return 0


def _docker_env(args: argparse.Namespace) -> int:
    from pymachine.hostvm.hostagent import launcher

    host = launcher.docker_host(args.name)
    print(f"export DOCKER_HOST={shlex.quote(host)}")
    print(f"# the docker CLI context 'pymachine-{args.name}' points at the same socket")
    print(f"# run this command to configure your shell: eval $(pymachine docker-env {args.name})")
    return 0
