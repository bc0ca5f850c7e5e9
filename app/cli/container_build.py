"""`pymachine build`: docker-py's low-level `api.build` against the machine's engine, streamed like
`docker build` (the legacy builder's output). The Dockerfile runs in the guest agent's builder."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from docker.utils import match_tag

from pymachine.hostvm import containers
from pymachine.hostvm.errors import PymachineError, UsageError


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


def split_tag(ref: str) -> tuple[str, str]:
    """`name:tag` → (name, tag), minding a registry port (`localhost:5000/app` has no tag: `latest`)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def follow_build(events: Any, write: Callable[[str], None], warn: Callable[[str], None]) -> str | None:
    """Show the build's `stream` lines; return the image id (`aux.ID`); an `error` ends the build as a
    PymachineError."""
    image_id = None
    for event in events:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            raise PymachineError(
                f"build failed: {(event.get('error') or detail.get('message') or 'unknown error').strip()}",
                hint="fix the step above and build again (finished steps come from the cache)",
            )
        if event.get("stream"):
            write(event["stream"])
        elif event.get("status"):
            warn(str(event["status"]))
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    return image_id


def run(args: argparse.Namespace, client: Callable[[], Any], progress: Callable[[str], None]) -> int:
    """`pymachine build`: check the flags before touching the machine, build, stream, add the extra tags."""
    request = build_request(args.path, args.tag, args.file, args.build_arg, args.target, args.no_cache)
    dc = client()

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with containers.api_errors("building"):
        image_id = follow_build(dc.api.build(**request), write, progress)
    if image_id is None:
        raise PymachineError("the engine finished the build without naming an image")
    for ref in args.tag[1:]:
        repo, tag = split_tag(ref)
        with containers.api_errors(f"tagging {ref}"):
            dc.api.tag(image_id, repo, tag)
        print(f"Successfully tagged {ref}")
    return 0
