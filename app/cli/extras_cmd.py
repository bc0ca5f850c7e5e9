"""Verbs around the machine rather than in it: `ssh-config` and `completion` (bash, zsh, fish).

The completion scripts are generated from the parser itself (verbs and each verb's options), and ask
`pymachine __complete machines|containers|images` for names at the moment of completion: machine names from
this home (no VM needed), container and image names from the default machine's engine when it runs."""

from __future__ import annotations

import argparse
import sys

from pymachine.hostvm.config import DEFAULT_NAME

MACHINE_VERBS = ("start", "stop", "restart", "delete", "inspect", "ssh", "ssh-config", "docker-env", "mount")
CONTAINER_VERBS = ("logs", "exec", "rm")
IMAGE_VERBS = ("run", "rmi", "pull", "save")
NAME_SOURCES = ((MACHINE_VERBS, "machines"), (CONTAINER_VERBS, "containers"), (IMAGE_VERBS, "images"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ssh-config",
        help="an ssh_config block for a machine (ssh, scp, rsync, editors)",
        description="Print an ssh_config block for the machine, with its pinned host key.",
        epilog="example: pymachine ssh-config dev >> ~/.ssh/config && ssh pymachine-dev",
    )
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.set_defaults(func=_ssh_config)

    p = sub.add_parser(
        "completion",
        help="shell completion: bash, zsh or fish",
        description="Print a completion script for your shell.",
        epilog="examples:\n  source <(pymachine completion bash)        # in ~/.bashrc\n"
        "  source <(pymachine completion zsh)         # in ~/.zshrc\n"
        "  pymachine completion fish > ~/.config/fish/completions/pymachine.fish",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    p.set_defaults(func=_completion)

    p = sub.add_parser("__complete")  # for the completion scripts; not listed in --help
    p.add_argument("what", choices=("machines", "containers", "images"))
    p.add_argument("--machine", default=DEFAULT_NAME)
    p.set_defaults(func=_complete)
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "__complete"]


def _ssh_config(args: argparse.Namespace) -> int:
    from pymachine.hostvm import machines, ssh

    machines.get(args.name)  # NotFoundError with a hint
    print(ssh.config_block(args.name))
    return 0


def names(what: str, machine: str = DEFAULT_NAME) -> list[str]:
    """Names for completion; [] whenever they cannot be had quickly (a stopped machine, no engine)."""
    from pymachine.hostvm import machines, paths

    if what == "machines":
        return [m.name for m in machines.list_machines()]
    sock = paths.machine(machine).docker_socket
    if not sock.exists():
        return []
    import docker

    try:
        dc = docker.DockerClient(base_url=f"unix://{sock}", version="1.44", timeout=2)
        if what == "containers":
            return [c.name for c in dc.containers.list(all=True)]
        return sorted({t for img in dc.images.list() for t in img.tags})
    except Exception:  # noqa: BLE001 - completion must never print an error into the command line
        return []


def _complete(args: argparse.Namespace) -> int:
    for name in names(args.what, args.machine):
        print(name)
    return 0


def _verbs(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """verb → its option strings, from the parser (the scripts stay true as verbs gain flags)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, list[str]] = {}
    for name, child in sub.choices.items():
        if name.startswith("__"):
            continue
        out[name] = sorted({o for a in child._actions for o in a.option_strings})
    return out


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help or "" for a in sub._choices_actions}


def bash_script(parser: argparse.ArgumentParser) -> str:
    verbs = _verbs(parser)
    cases = "\n".join(f"        {v}) opts='{' '.join(o)}' ;;" for v, o in verbs.items())
    return f"""# pymachine completion for bash (source <(pymachine completion bash))
_pymachine() {{
    local cur prev verb opts words i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    verb=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --machine) ((i++)) ;;
            -*) ;;
            *) verb="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ "$prev" == "--machine" ]]; then
        COMPREPLY=($(compgen -W "$(pymachine __complete machines 2>/dev/null)" -- "$cur"))
        return
    fi
    if [[ -z "$verb" ]]; then
        COMPREPLY=($(compgen -W "{" ".join(verbs)} --help --version --machine --debug" -- "$cur"))
        return
    fi
    case "$verb" in
{cases}
    esac
    words=""
    case "$verb" in
        {"|".join(MACHINE_VERBS)}) words="$(pymachine __complete machines 2>/dev/null)" ;;
        {"|".join(CONTAINER_VERBS)}) words="$(pymachine __complete containers 2>/dev/null)" ;;
        {"|".join(IMAGE_VERBS)}) words="$(pymachine __complete images 2>/dev/null)" ;;
        completion) words="bash zsh fish" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}}
complete -o default -F _pymachine pymachine
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return (
        "# pymachine completion for zsh (source <(pymachine completion zsh)): the bash one, through zsh's\n"
        "# bashcompinit\nautoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"
        + bash_script(parser)
    )


def fish_script(parser: argparse.ArgumentParser) -> str:
    verbs, helps = _verbs(parser), _helps(parser)
    lines = [
        "# fish: pymachine completion fish > ~/.config/fish/completions/pymachine.fish",
        "complete -c pymachine -f",
        "complete -c pymachine -n __fish_use_subcommand -l machine -x -a '(pymachine __complete machines)'",
        "complete -c pymachine -n __fish_use_subcommand -l version -d 'the client version'",
    ]
    for verb in verbs:
        text = helps.get(verb, "").replace("'", "\\'")
        lines.append(f"complete -c pymachine -n __fish_use_subcommand -a {verb} -d '{text}'")
    for group, what in NAME_SOURCES:
        when = "__fish_seen_subcommand_from " + " ".join(group)
        lines.append(f"complete -c pymachine -n '{when}' -a '(pymachine __complete {what})'")
    lines.append("complete -c pymachine -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'")
    for verb, options in verbs.items():
        for opt in options:
            flag = f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}"
            lines.append(f"complete -c pymachine -n '__fish_seen_subcommand_from {verb}' {flag}")
    return "\n".join(lines) + "\n"


def _completion(args: argparse.Namespace) -> int:
    from pymachine.app.cli.main import build_parser

    parser = build_parser()
    script = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell](parser)
    sys.stdout.write(script)
    return 0
