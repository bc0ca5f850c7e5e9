"""What `mount list` says about a sync share: the host agent's sync-state.json read back
(hostagent/syncshare.py writes it at every change of state and after every batch)."""

from __future__ import annotations

from typing import Any

from . import paths, store


def describe(entry: dict[str, Any]) -> str:
    """in sync | N pending | syncing | error: … (+ conflicts kept aside)."""
    state = str(entry.get("state") or "pending")
    if state in ("error", "lost"):
        text = f"{state}: {entry.get('error') or 'see the host agent log'}"
    elif state == "in sync" and entry.get("pending"):
        text = f"{entry['pending']} pending"
    else:
        text = state
    if entry.get("conflicts"):
        text += f", {entry['conflicts']} conflict(s) kept as *.conflict-*"
    return text


def annotate(shares: list[dict[str, Any]], name: str, running: bool) -> None:
    """Add `sync_state` (text) and `sync` (the raw entry) to each sync share of a running machine."""
    if not any(s.get("transport") == "sync" for s in shares):
        return
    raw = store.read_json(paths.machine(name).dir / "sync-state.json", {}) if running else {}
    for s in shares:
        if s.get("transport") != "sync":
            continue
        entry = (raw or {}).get(s["path"])
        s["sync"] = entry
        s["sync_state"] = describe(entry) if entry else ("not started" if running else "")
