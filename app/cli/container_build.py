"""`pymachine build`: docker-py's low-level `api.build` against the machine's engine, streamed like
`docker build` (the legacy builder's output). The Dockerfile runs in the guest agent's builder."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from pymachine.hostvm import containers, images_io
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.progress import BuildOutput


def build_request(
    path: str,
    tags: list[str],
    file: str | None,
    build_args: list[str],
    target: str | None,
    no_cache: bool,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The CLI's build flags → keyword arguments for docker-py's `api.build` (the first tag; the others are
    added with `api.tag` afterwards, since docker-py sends only one `t`)."""
    from docker.utils import match_tag  # docker-py (0.1 s) only when a build runs, not for `run --help`

    if not os.path.isdir(path):
        raise UsageError(f"build context '{path}' is not a folder", hint="pymachine build -t NAME PATH")
    for ref in tags:
        if not match_tag(ref):
            raise UsageError(f"invalid tag '{ref}': invalid reference format", hint="-t name[:tag]")
    env = os.environ if environ is None else environ
    buildargs: dict[str, str] = {}
    for spec in build_args:
        key, eq, value = spec.partition("=")
        if not key:
            raise UsageError(f"--build-arg '{spec}' has no name", hint="--build-arg KEY=VALUE")
        if eq:
            buildargs[key] = value
        elif key in env:  # `--build-arg KEY` takes KEY from the environment, as docker build does
            buildargs[key] = env[key]
    request: dict[str, Any] = {
        "path": os.path.abspath(path),
        "decode": True,
        "rm": True,
        "nocache": no_cache,
        "buildargs": buildargs,
    }
    if file:
        # like docker build: -f is relative to where you are, not to the context
        request["dockerfile"] = os.path.abspath(file)
    if target:
        request["target"] = target
    if tags:
        request["tag"] = tags[0]
    return request


def run(args: argparse.Namespace, client: Callable[[], Any], progress: Callable[[Any], None]) -> int:
    """`pymachine build`: check the flags before touching the machine, build, stream, add the extra tags.
    The build's own output goes to stdout as it comes (like `docker build`); notes go to `progress`."""
    request = build_request(args.path, args.tag, args.file, args.build_arg, args.target, args.no_cache)
    dc = client()

    def show(event: Any) -> None:
        if isinstance(event, BuildOutput):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        else:
            progress(event)

    image_id = images_io.build(dc, request, show)
    for ref in args.tag[1:]:
        parsed = images_io.parse_reference(ref)
        with containers.api_errors(f"tagging {ref}"):
            dc.api.tag(image_id, parsed.repository, parsed.tag or "latest")
        print(f"Successfully tagged {ref}")
    return 0
