"""CLI verbs of one area (see VERB_MODULES in main.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's verbs; filled in by the area's issue."""
