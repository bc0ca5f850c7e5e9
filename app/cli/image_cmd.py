"""`pymachine image build|inspect`: the guest VM image (and, with --containers, the base container images)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from pymachine.app.cli import render
from pymachine.hostvm import image


def _progress() -> Callable[[Any], None]:
    """One line per build stage, with the seconds elapsed since the build started; the typed values (what
    mmdebstrap is doing, stages) go to the command's progress display."""
    started = time.monotonic()

    def say(message: Any) -> None:
        render.progress(
            f"[{time.monotonic() - started:6.1f}s] {message}" if isinstance(message, str) else message
        )

    return say


def _human(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _build(args: argparse.Namespace) -> int:
    found = None if args.force else image.inspect_image()
    if found is None:
        print("building the guest image (Debian bookworm, cached by recipe hash)", file=sys.stderr)
        found = image.ensure_image(_progress(), force=args.force)
    if args.containers:
        from pymachine.hostvm import container_images

        for name in container_images.BUILTIN_IMAGES:
            path = container_images.ensure_container_image(name, _progress())
            print(f"{name}: {path}")
    print(f"image {found.recipe_hash[:12]}: {found.disk} ({_human(found.disk_bytes)})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    found = image.inspect_image()
    if found is None:
        from pymachine.hostvm.errors import NotFoundError

        raise NotFoundError(
            f"the guest image for recipe {image.recipe_hash()[:12]} has not been built",
            hint="run 'pymachine image build'",
        )
    if args.format == "json":
        print(json.dumps(found.to_json(), indent=2, sort_keys=True))
        return 0
    rows = [
        ("recipe", found.recipe_hash),
        ("kernel", f"{found.kernel} ({found.kernel_version})"),
        ("initrd", str(found.initrd)),
        ("disk", f"{found.disk} ({_human(found.disk_bytes)} used, {_human(found.virtual_bytes)} virtual)"),
        ("cmdline", found.cmdline),
        ("agent", found.agent_checksum[:12]),
        ("built", f"{found.built_at} in {found.build_seconds:.0f} s"),
    ]
    for key, value in rows:
        print(f"{key:<8} {value}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    removed = image.prune_images(min_age_seconds=0 if args.all else 3600)
    for folder in removed:
        print(f"removed {folder}")
    print(f"{len(removed)} old image(s) removed; kept the current one and those this home's machines use")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("image", help="build or inspect the guest VM image")
    verbs = parser.add_subparsers(dest="image_verb", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    build = verbs.add_parser("build", help="build the guest image (a no-op when it is already cached)")
    build.add_argument(
        "--force",
        action="store_true",
        help="rebuild from scratch even if cached (stop machines made from this image first: "
        "their disks are overlays on it)",
    )
    build.add_argument(
        "--containers", action="store_true", help="also build the base container images (busybox, debian)"
    )
    build.set_defaults(func=_build)

    inspect = verbs.add_parser("inspect", help="show the cached guest image")
    inspect.add_argument("--format", choices=("text", "json"), default="text")
    inspect.set_defaults(func=_inspect)

    prune = verbs.add_parser("prune", help="delete old guest images no machine of this home uses")
    prune.add_argument(
        "--all", action="store_true", help="also images built in the last hour (default: keep them)"
    )
    prune.set_defaults(func=_prune)
