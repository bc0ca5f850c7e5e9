"""`pymachine` entry point: parse, dispatch, and turn every error into a message and an exit code."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from pymachine.hostvm.config import DEFAULT_NAME
from pymachine.hostvm.errors import PymachineError

# Every verb, by its group in `--help`: (name, the module that defines and runs it, its line in `--help`).
# Only the chosen verb's module is imported: those modules load what their verbs run (paramiko, docker-py,
# libvirt), which `--help`, `--version` and a mistyped verb must not wait for. tests/unit/test_cli_start.py
# holds these lines to what the modules register.
VERBS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "machines",
        (
            ("create", "machine_cmd", "create a machine"),
            ("start", "machine_cmd", "start (resume a saved) machine and wait until it is ready"),
            ("stop", "machine_cmd", "stop a machine, saving its state for a fast start"),
            ("restart", "machine_cmd", "stop and start a machine"),
            ("delete", "machine_cmd", "delete a machine: VM, disk, keys"),
            ("list", "machine_cmd", "list machines"),
            ("inspect", "machine_cmd", "a machine's details as JSON"),
            ("ssh", "machine_cmd", "a shell in a machine, or run a command: ssh [NAME] [-- CMD...]"),
            ("ssh-config", "extras_cmd", "an ssh_config block for a machine (ssh, scp, rsync, editors)"),
            ("mount", "machine_cmd", "host folders shared with a machine: mount add|rm|list|transport NAME"),
            ("set", "set_cmd", "change a machine's CPUs, memory or disk size (at its next start)"),
            ("docker-env", "container_cmd", "print shell exports pointing docker at a machine: eval $(...)"),
            ("doctor", "machine_cmd", "check this host for what machines need"),
            ("cluster", "cluster_cmd", "Swarm clusters of machines: cluster create|list|inspect|load|rm"),
        ),
    ),
    (
        "containers",
        (
            ("run", "container_cmd", "run a container (creates and starts the default machine if needed)"),
            ("ps", "container_cmd", "list containers"),
            ("logs", "container_cmd", "a container's output"),
            ("exec", "container_cmd", "run a command in a running container"),
            ("rm", "container_cmd", "remove containers"),
            ("build", "container_cmd", "build an image from a Dockerfile (the build runs in the machine)"),
            ("container", "container_cmd", "container verbs (run, ps, logs, exec, start, stop, rm, ...)"),
        ),
    ),
    (
        "images",
        (
            ("images", "container_cmd", "list images"),
            ("rmi", "container_cmd", "remove images (untag; an image goes with its last tag)"),
            ("pull", "container_cmd", "pull an image (the builtin pymachine/* images are built locally)"),
            ("load", "container_cmd", "load images from a docker-archive tarball"),
            ("save", "container_cmd", "save images to a docker-archive tarball"),
            ("image", "image_cmd", "build or inspect the guest VM image"),
        ),
    ),
    (
        "apps",
        (
            (
                "app",
                "deploy_cmd",
                "apps deployed by git push: app create|list|info|logs|releases|rollback|config|rm",
            ),
        ),
    ),
    (
        "other",
        (
            ("gui", "gui_cmd", "open the desktop app"),
            ("version", "version_cmd", "versions of the client, the guest image and agent, and the engine"),
            ("completion", "extras_cmd", "shell completion: bash, zsh or fish"),
        ),
    ),
)
HIDDEN_VERBS = {"__complete": "extras_cmd"}  # for the completion scripts; not listed in --help
MODULES = {verb: module for _, rows in VERBS for verb, module, _ in rows} | HIDDEN_VERBS
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
            listed = self._listed(action)
            near = difflib.get_close_matches(value, listed, n=1)
            guess = f" (did you mean '{near[0]}'?)" if near else ""
            raise argparse.ArgumentError(None, f"unknown command '{value}'{guess}")
        super()._check_value(action, value)

    def _listed(self, action: argparse._SubParsersAction) -> list[str]:
        return [a.dest for a in action._choices_actions]

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to do, as for every other bad input.
        self.exit(2, f"error: {message}\nhint: run '{self.prog} --help' for usage\n")


class _TopParser(_Parser):
    def _listed(self, action: argparse._SubParsersAction) -> list[str]:
        return [verb for _, rows in VERBS for verb, _, _ in rows]  # most verbs are unloaded placeholders

    def format_help(self) -> str:
        """argparse lists sub-commands in one block; a person looks for them by what they act on. The lines
        come from VERBS, so that this help imports no verb's module."""
        out = [self.format_usage(), (self.description or "") + "\n"]
        for group, rows in VERBS:
            out.append(f"{group}:")
            out += [f"  {verb:<12} {text}" for verb, _, text in rows]
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


def build_parser(
    default_machine: str = DEFAULT_NAME, verbs: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """The parser with the modules of `verbs` registered (None: every module, as the completion scripts
    need) and every other verb a placeholder that takes any arguments: enough to find the verb, print
    `--help`, or name a mistyped verb."""
    parser = _TopParser(prog="pymachine", description="Run containers in a lightweight Linux VM.")
    parser.add_argument("--debug", action="store_true", help="verbose logging to stderr")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--machine", dest="global_machine", metavar="NAME", help="the machine to act on")
    # for a verb whose machine is not an argparse default (ssh's `[NAME] [-- CMD...]`)
    parser.set_defaults(default_machine=default_machine)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    modules = dict.fromkeys(MODULES[v] for v in (MODULES if verbs is None else verbs) if v in MODULES)
    for module in modules:
        importlib.import_module(f"pymachine.app.cli.{module}").register(sub)
    for verb in MODULES:
        if verb not in sub.choices:
            sub.add_parser(verb, add_help=False)
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
    machine = default_machine(argv)
    # First find the verb (`--help`, `--version` and an unknown verb end here), then parse again with only
    # that verb's module loaded.
    parser = build_parser(machine, verbs=())
    args, _ = parser.parse_known_args(argv)
    if args.verb is not None:
        parser = build_parser(machine, verbs=(args.verb,))
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
