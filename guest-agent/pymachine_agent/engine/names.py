"""Names the engine makes up: a container's random `adjective_scientist` name, an image reference's tag."""

from __future__ import annotations

import random
from collections.abc import Iterable

ADJECTIVES = [
    "admiring",
    "brave",
    "clever",
    "dreamy",
    "eager",
    "festive",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "modest",
    "nifty",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "zen",
]
NOUNS = [
    "turing",
    "hopper",
    "lovelace",
    "curie",
    "darwin",
    "euler",
    "fermi",
    "galileo",
    "hawking",
    "kepler",
    "lamport",
    "meitner",
    "newton",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "wozniak",
]


def new_name(taken: Iterable[str]) -> str:
    """A random name that no container in `taken` has (dockerd's `docker run` without --name)."""
    used = set(taken)
    while True:
        name = f"{random.choice(ADJECTIVES)}_{random.choice(NOUNS)}"
        if name not in used:
            return name


def with_tag(ref: str) -> str:
    """`busybox` → `busybox:latest`, as Docker names a reference without a tag in its messages."""
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref or ":" in last or ref.startswith("sha256:"):
        return ref
    return ref + ":latest"
