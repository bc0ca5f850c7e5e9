"""GUI tier: real widgets on Qt's offscreen platform (no display needed)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_QPA_FONTDIR", "/usr/share/fonts/truetype/dejavu")

from support.gui import agent_engine, gui_home, wait_idle  # noqa: E402,F401 - fixtures and helpers
