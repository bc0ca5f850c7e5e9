"""Container verbs: run, ps, logs, exec, rm, build, images, rmi, pull, load, save, docker-env (top level) and
the same plus `start` and `stop` under `pymachine container …` (a top-level `start`/`stop` is the machine's).
Rendering only: the work is docker-py through `hostvm.containers` and `hostvm.images_io`."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from pymachine.app.cli import container_build, formats, render, terminal
from pymachine.hostvm import containers, images_io
from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.errors import PymachineError

Handler = Callable[[argparse.Namespace], int]
FORMAT_HELP = (
    "table (default), json (JSON lines), or a Go template: '{{.Names}}', '{{json .}}', 'table {{.ID}}'"
)


_progress = render.progress


def _add_verbs(sub: argparse._SubParsersAction, include_start_stop: bool) -> None:
    def verb(
        name: str, func: Handler, text: str, fmt: bool = False, epilog: str = ""
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # %(default)s: build_parser sets the default from --machine before the verb or $PYMACHINE_MACHINE
        p.add_argument(
            "--machine", default=DEFAULT_NAME, metavar="NAME", help="the machine (default: %(default)s)"
        )
        if fmt:
            p.add_argument("--format", default="table", metavar="FORMAT", help=FORMAT_HELP)
        p.set_defaults(func=func)
        return p

    p = verb(
        "run",
        _run,
        "run a container (creates and starts the default machine if needed)",
        fmt=True,
        epilog="examples:\n  pymachine run --rm -it pymachine/debian bash\n"
        "  pymachine run -d -p 8080:80 --name web pymachine/busybox httpd -f -p 80 -h /www\n\n"
        "exit status: the command's; 125 when the container could not be made, 126 when its command cannot\n"
        "be run, 127 when it does not exist (as docker run)",
    )
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print its id")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:]HOST:CONTAINER[/udp]",
        help="publish a container port on this host (127.0.0.1 unless IP says otherwise; repeatable)",
    )
    p.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set a variable (repeatable)"
    )
    p.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="VOLUME:PATH[:ro]",
        help="a named volume or a host folder (in a shared folder: home, temp) at PATH (repeatable)",
    )
    p.add_argument("--name", help="the container's name (default: a generated one)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument(
        "--pull",
        choices=images_io.PULL_POLICIES,
        default="missing",
        help="when to pull the image: missing (default: when it is not here), always, never",
    )
    p.add_argument("image", help="the image to run, e.g. pymachine/busybox")
    optional_remainder(p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its args"))

    p = verb(
        "ps",
        _ps,
        "list containers",
        fmt=True,
        epilog="examples:\n  pymachine ps -a --filter status=exited -q\n"
        "  pymachine ps --format 'table {{.Names}}\\t{{.Status}}'",
    )
    p.add_argument("-a", "--all", action="store_true", help="also stopped ones")
    p.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"keep only matching containers ({', '.join(formats.FILTER_KEYS)}; repeatable)",
    )

    p = verb("logs", _logs, "a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all", metavar="N", help="only the last N lines")
    p.add_argument("--since", metavar="WHEN", help="only lines since: 10m, 1h30m, a timestamp or a date")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument("container")

    p = verb("exec", _exec, "run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("container")
    optional_remainder(p.add_argument("command", nargs=argparse.REMAINDER))

    if include_start_stop:
        p = verb("start", _start, "start stopped containers (their published ports open again)")
        p.add_argument("containers", nargs="+")
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

    p = verb("images", _images, "list images", fmt=True)
    p.add_argument("-q", "--quiet", action="store_true", help="only the image ids")

    p = verb("rmi", _rmi, "remove images (untag; an image goes with its last tag)")
    p.add_argument("-f", "--force", action="store_true", help="also one that stopped containers use")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = verb("pull", _pull, "pull an image (the builtin pymachine/* images are built locally)", fmt=True)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the image name")
    p.add_argument("image")

    p = verb("load", _load, "load images from a docker-archive tarball", fmt=True)
    p.add_argument("-i", "--input", required=True, metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")

    p = verb("save", _save, "save images to a docker-archive tarball")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = sub.add_parser("docker-env", help="print shell exports pointing docker at a machine: eval $(...)")
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.add_argument(
        "--shell", choices=("bash", "zsh", "sh", "fish", "powershell", "cmd"), help="default: $SHELL"
    )
    p.add_argument("-u", "--unset", action="store_true", help="print the commands that undo it")
    p.set_defaults(func=_docker_env)


def register(sub: argparse._SubParsersAction) -> None:
    _add_verbs(sub, include_start_stop=False)
    text = "container verbs (run, ps, logs, exec, start, stop, rm, ...)"
    group = sub.add_parser("container", help=text, description=text)
    _add_verbs(
        group.add_subparsers(dest="container_verb", metavar="VERB", parser_class=type(group), required=True),
        True,
    )


def optional_remainder(action: argparse.Action) -> None:
    """argparse marks a REMAINDER positional required, so that a usage error names it among the missing
    arguments ("required: image, command") although an empty one is fine: it is not."""
    action.required = False


# -- helpers ------------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace, create: bool = False):  # type: ignore[no-untyped-def]
    if getattr(args, "client", None) is not None:  # bound by the caller (tests drive an engine directly)
        return args.client
    if create:
        dc = containers.client(args.machine, ensure=True, progress=_progress)
        render.finish()
        return dc
    from pymachine.hostvm import machines
    from pymachine.hostvm.hostagent import launcher

    machine = machines.get(args.machine)  # NotFoundError with a hint when it does not exist
    if machine.state != "running":
        from pymachine.hostvm.status import not_running

        raise not_running(machine)
    launcher.ensure_running(args.machine, _progress)  # repairs a dead host agent
    render.finish()
    return containers.client(args.machine, ensure=False)


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: formats.Columns) -> None:
    render.finish()
    text = formats.format_rows(rows, columns, getattr(args, "format", "table"))
    if text:
        print(text)


# -- verbs --------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
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
        pull=args.pull,
        console_size=terminal.size() if args.tty else None,
    )
    try:  # until the container runs, a failure is docker run's own: 125, 126 or 127
        dc = _client(args, create=True)
        container = containers.create(dc, opts, _progress)
        render.finish()
        if args.detach:
            containers.start(container)
            container.reload()
            if args.format != "table":
                _emit(args, [containers.summary(container)], [])
            else:
                print(container.id)
            return 0
    except PymachineError as exc:
        exc.exit_code = formats.run_exit_code(exc.message)
        raise
    try:
        if args.interactive or args.tty:
            sock = dc.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            _start_or_exit_code(container)
            terminal.pump(
                sock, args.tty, args.interactive, lambda h, w: dc.api.resize(container.id, height=h, width=w)
            )
        else:
            _start_or_exit_code(container)
            _stream_logs(container)
        with containers.api_errors("waiting for the container"):
            result = container.wait()
        return int(result.get("StatusCode", 0))
    finally:
        if args.rm:
            with containers.api_errors():
                container.remove(force=True)


def _start_or_exit_code(container: Any) -> None:
    try:
        containers.start(container)
    except PymachineError as exc:
        exc.exit_code = formats.run_exit_code(exc.message)
        raise


def _stream_logs(container: Any, follow: bool = True, **options: Any) -> None:
    """stdout to stdout, stderr to stderr (two log streams, as `docker logs` keeps them apart)."""

    def copy(stdout: bool, out: Any) -> None:
        with containers.api_errors():
            for chunk in container.logs(
                stdout=stdout, stderr=not stdout, stream=True, follow=follow, **options
            ):
                out.write(chunk)
                out.flush()

    t = threading.Thread(target=copy, args=(False, sys.stderr.buffer), daemon=True)
    t.start()
    copy(True, sys.stdout.buffer)
    t.join(timeout=5)


def ps_rows(found: list[Any], forwards: list[dict[str, Any]], now: Any = None) -> list[dict[str, Any]]:
    """`ps` rows: the façade's summary with Docker's STATUS text (`Up 5 seconds`, `Exited (0) 2 minutes ago`)
    in place of its short one."""
    rows = [containers.summary(c, forwards) for c in found]
    for row, c in zip(rows, found, strict=True):
        row["Status"] = containers.status_text(c.attrs.get("State") or {}, now)
    return rows


PS_COLUMNS = [
    ("CONTAINER ID", "ID"),
    ("IMAGE", "Image"),
    ("COMMAND", "Command"),
    ("CREATED", "Created"),
    ("STATUS", "Status"),
    ("PORTS", "Ports"),
    ("NAMES", "Names"),
    ("STATE", "State"),
]


def _ps(args: argparse.Namespace) -> int:
    filters = formats.parse_filters(args.filter)
    dc = _client(args)
    with containers.api_errors():
        found = [c for c in dc.containers.list(all=args.all or "status" in filters or "exited" in filters)]
    found = [c for c in found if formats.matches(c.attrs, filters)]
    if args.quiet:
        for c in found:
            print(c.id[:12])
        return 0
    forwards: list[dict[str, Any]] = []
    if getattr(args, "client", None) is None:
        from pymachine.hostvm.hostagent import launcher

        forwards = launcher.status(args.machine, repair=False).get("forwards") or []
    rows = ps_rows(found, forwards)
    if args.format == "table":
        for r in rows:
            r["Command"] = '"' + (r["Command"][:20] + "…" if len(r["Command"]) > 20 else r["Command"]) + '"'
        cols = [c for c in PS_COLUMNS if c[1] not in ("Created", "State")]
    else:
        cols = PS_COLUMNS
    _emit(args, rows, cols)
    return 0


def _get(dc: Any, ref: str) -> Any:
    with containers.api_errors():
        return dc.containers.get(ref)


def _logs(args: argparse.Namespace) -> int:
    dc = _client(args)
    options: dict[str, Any] = {"timestamps": args.timestamps}
    if args.tail != "all":
        if not args.tail.isdigit():
            from pymachine.hostvm.errors import UsageError

            raise UsageError(f"--tail {args.tail}: a number of lines, or all")
        options["tail"] = int(args.tail)
    if args.since:
        options["since"] = formats.parse_since(args.since)
    _stream_logs(_get(dc, args.container), follow=args.follow, **options)
    return 0


def _exec(args: argparse.Namespace) -> int:
    if not args.command:
        raise PymachineError("exec needs a command", hint="pymachine exec CONTAINER sh -c '...'")
    dc = _client(args)
    container = _get(dc, args.container)
    body: dict[str, Any] = {
        "AttachStdin": args.interactive,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": args.tty,
        "Cmd": args.command,
    }
    size = terminal.size() if args.tty else None
    if size:
        body["ConsoleSize"] = list(size)  # set before the process starts (API 1.42+), as `docker exec -t`
    with containers.api_errors(f"exec in {args.container}"):
        res = dc.api._post_json(dc.api._url("/containers/{0}/exec", container.id), data=body)
        exec_id = dc.api._result(res, True)["Id"]
        sock = dc.api.exec_start(exec_id, tty=args.tty, socket=True)
    terminal.pump(
        sock, args.tty, args.interactive, lambda h, w: dc.api.exec_resize(exec_id, height=h, width=w)
    )
    import requests  # loaded by docker-py by now; not at the top, so that `run --help` need not load it

    with containers.api_errors():
        try:
            code = dc.api.exec_inspect(exec_id).get("ExitCode")
        except requests.exceptions.ConnectionError:
            # seen once under load: a pooled connection answered with a stray byte of the finished terminal
            # stream before its status line; a fresh connection asks again
            dc.api.close()
            code = dc.api.exec_inspect(exec_id).get("ExitCode")
    return int(code or 0)


def _start(args: argparse.Namespace) -> int:
    dc = _client(args)
    for ref in args.containers:
        containers.start(_get(dc, ref))  # its published ports are live once this returns, as at `run`
        print(ref)
    return 0


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


IMAGE_COLUMNS = [
    ("REPOSITORY", "Repository"),
    ("TAG", "Tag"),
    ("IMAGE ID", "ID"),
    ("CREATED", "Created"),
    ("SIZE", "Size"),
]


def _images(args: argparse.Namespace) -> int:
    dc = _client(args)
    with containers.api_errors():
        found = dc.images.list()
    rows = [row for img in found for row in containers.image_summary(img)]
    if args.quiet:
        for image_id in dict.fromkeys(r["ID"] for r in rows):
            print(image_id)
        return 0
    from pymachine.hostvm.units import human_size

    if args.format == "table":
        for r in rows:
            r["Size"] = human_size(int(r["Size"] or 0))
    _emit(args, rows, [c for c in IMAGE_COLUMNS if args.format != "table" or c[1] != "Created"])
    return 0


def _rmi(args: argparse.Namespace) -> int:
    """As `docker rmi`: every image is tried, each failure reported; the status says whether any failed."""
    dc = _client(args)
    failed = 0
    for ref in args.images:
        try:
            for kind, value in images_io.remove(dc, ref, force=args.force):
                print(f"{kind}: {value}")
        except PymachineError as exc:
            print(exc.render(), file=sys.stderr)
            failed = exc.exit_code
    return failed


def _pull(args: argparse.Namespace) -> int:
    dc = _client(args, create=True)
    loaded = images_io.pull(dc, args.image, render.quiet if args.quiet else _progress)
    render.finish()
    if args.quiet:
        print(*loaded, sep="\n")
    else:
        _emit(args, [{"Image": t} for t in loaded], [("IMAGE", "Image")])
    return 0


def _load(args: argparse.Namespace) -> int:
    dc = _client(args, create=True)
    loaded = images_io.load(dc, args.input, render.quiet if args.quiet else _progress)
    render.finish()
    _emit(args, [{"Image": t} for t in loaded], [("LOADED", "Image")])
    return 0


def _save(args: argparse.Namespace) -> int:
    dc = _client(args)
    with open(args.output, "wb") as out:
        images_io.save(dc, args.images, out, _progress)
    return 0


def _docker_env(args: argparse.Namespace) -> int:
    from pymachine.app.cli import shell_env
    from pymachine.hostvm import machines
    from pymachine.hostvm.hostagent import launcher

    if not args.unset:  # exports for a machine that does not exist would point docker at nothing, silently
        m = machines.get(args.name)
        if m.state != "running":  # docker would say only "Cannot connect to the Docker daemon": say why first
            from pymachine.hostvm.status import state_label

            print(
                f"note: machine '{m.name}' is {state_label(m, None)}: docker reaches it once it runs "
                f"(pymachine start {m.name})",
                file=sys.stderr,
            )
    host = "" if args.unset else launcher.docker_host(args.name)
    print(shell_env.render(args.shell or shell_env.detect(), host, args.name, args.unset))
    return 0
