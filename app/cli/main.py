"""`pymachine` entry point: parse, dispatch, and turn every error into a message and an exit code."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.errors import PymachineError

# Each module registers its verbs on the sub-parser; one module per area, owned by that area.
VERB_MODULES = (
    "pymachine.app.cli.image_cmd",
    "pymachine.app.cli.machine_cmd",
    "pymachine.app.cli.set_cmd",
    "pymachine.app.cli.container_cmd",
    "pymachine.app.cli.gui_cmd",
    "pymachine.app.cli.version_cmd",
    "pymachine.app.cli.extras_cmd",
    "pymachine.app.cli.deploy_cmd",
    "pymachine.app.cli.cluster_cmd",
)

# `--help` lists the verbs in these groups (a verb not named here lands under "other").
HELP_GROUPS = (
    (
        "machines",
        (
            "create",
            "start",
            "stop",
            "restart",
            "delete",
            "list",
            "inspect",
            "ssh",
            "ssh-config",
            "mount",
            "set",
            "docker-env",
            "doctor",
            "cluster",
        ),
    ),
    ("containers", ("run", "ps", "logs", "exec", "rm", "build", "container")),
    ("images", ("images", "rmi", "pull", "load", "save", "image")),
    ("apps", ("app",)),
)
EXAMPLES = """\
examples:
  pymachine create dev --cpus 2 --memory 2G --start
  pymachine run --rm -it pymachine/debian bash
  pymachine run -d -p 8080:80 --name web pymachine/busybox httpd -f -p 80 -h /www
  pymachine ps --format '{{.Names}} {{.Status}}'
  pymachine logs --tail 20 -t web
  eval "$(pymachine docker-env)"            # then: docker ps
  pymachine ssh-config dev >> ~/.ssh/config
  source <(pymachine completion bash)

The machine is --machine NAME, else $PYMACHINE_MACHINE, else 'default'."""


class _Parser(argparse.ArgumentParser):
    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """An unknown verb: argparse would list every choice, hidden ones (`__complete`) too, on one long
        line; a person wants the nearest verb, and --help for the rest."""
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            listed = [a.dest for a in action._choices_actions]
            near = difflib.get_close_matches(value, listed, n=1)
            guess = f" (did you mean '{near[0]}'?)" if near else ""
            raise argparse.ArgumentError(None, f"unknown command '{value}'{guess}")
        super()._check_value(action, value)

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to do, as for every other bad input.
        self.exit(2, f"error: {message}\nhint: run '{self.prog} --help' for usage\n")


class _TopParser(_Parser):
    def format_help(self) -> str:
        """argparse lists sub-commands in one block; a person looks for them by what they act on."""
        verbs = {a.dest: a.help or "" for a in _subparsers(self)._choices_actions}
        out = [self.format_usage(), (self.description or "") + "\n"]
        seen: set[str] = set()
        for group, names in (*HELP_GROUPS, ("other", tuple(v for v in verbs if v not in _grouped()))):
            rows = [(n, verbs[n]) for n in names if n in verbs and n not in seen]
            if not rows:
                continue
            out.append(f"{group}:")
            out += [f"  {n:<12} {h}" for n, h in rows]
            seen.update(n for n, _ in rows)
            out.append("")
        out.append("options:")
        out += [
            "  -h, --help     this help; COMMAND --help for a command's own",
            "  --version      the client's version (pymachine version: the engine's too)",
            "  --machine NAME the machine the command acts on",
            "  --debug        verbose logging to stderr",
            "",
            EXAMPLES,
        ]
        return "\n".join(out) + "\n"


def _grouped() -> set[str]:
    return {n for _, names in HELP_GROUPS for n in names}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                yield from _all_parsers(child)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="the client's version")

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        from pymachine.app.cli import version_cmd

        print(version_cmd.short())
        parser.exit(0)


def build_parser(default_machine: str = DEFAULT_NAME) -> argparse.ArgumentParser:
    parser = _TopParser(prog="pymachine", description="Run containers in a lightweight Linux VM.")
    parser.add_argument("--debug", action="store_true", help="verbose logging to stderr")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--machine", dest="global_machine", metavar="NAME", help="the machine to act on")
    # for a verb whose machine is not an argparse default (ssh's `[NAME] [-- CMD...]`)
    parser.set_defaults(default_machine=default_machine)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    if default_machine != DEFAULT_NAME:
        # Every verb's machine argument (`NAME` or `--machine`) defaults to the chosen machine.
        for p in _all_parsers(parser):
            for action in p._actions:
                if action.dest in ("name", "machine") and action.default == DEFAULT_NAME:
                    action.default = default_machine
    return parser


def default_machine(argv: Sequence[str] | None) -> str:
    """The global `--machine NAME` (before the verb), else $PYMACHINE_MACHINE, else `default`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--machine")
    words = list(sys.argv[1:] if argv is None else argv)
    head = []
    for i, word in enumerate(words):  # only the options before the verb are global ones
        if not word.startswith("-"):
            break
        head.append(word)
        if word == "--machine" and i + 1 < len(words):
            head.append(words[i + 1])
    known, _ = pre.parse_known_args(head)
    return known.machine or os.environ.get("PYMACHINE_MACHINE") or DEFAULT_NAME


def main(argv: Sequence[str] | None = None, client: Any = None) -> int:
    """`client`: a docker-py client the container verbs use instead of a machine's (tests bind an engine)."""
    parser = build_parser(default_machine(argv))
    args = parser.parse_args(argv)
    args.client = client
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
        from pymachine.app.cli import render

        render.finish()
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        from pymachine.app.cli import render

        render.finish()  # first: a live display still drawing would paint over the line
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        from pymachine.app.cli import render

        render.finish()  # the progress display ends before the shell prompt returns


if __name__ == "__main__":
    sys.exit(main())
