"""Verbs around the machine rather than in it: `completion` and `ssh-config`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
