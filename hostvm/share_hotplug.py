"""`pymachine mount add|rm` on a running machine: apply at once where that is cheap, else say when it applies.

- sshfs: the host agent mounts (or unmounts) the share over the machine's SSH link at once (control op
  `share-mount`/`share-unmount`, one exec channel), and tells the guest agent the new share list; the
  machine's state.json then lists it as started, so `mount list` shows nothing pending.
- virtiofs, 9p: the device is fixed at boot (one vhost-user-fs or virtio-9p device per share, and the guest
  init mounts them before the engine starts), so a change applies at the next start. libvirt ≥ 7.x can
  attach a virtiofs <filesystem> to a running domain, but the guest would then need a mount made by the
  guest agent and a virtiofsd started for it, and direct QEMU would need the same over QMP: not done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import paths, store
from .config import Share

When = Literal["now", "restart", "next start"]
HOTPLUG_TIMEOUT_S = 120.0  # an sshfs mount under TCG takes seconds; the host agent answers when it is done


@dataclass(frozen=True)
class ShareChange:
    """When a share change made in config.json takes effect; `problem` says why a hot-plug did not happen."""

    when: When
    problem: str = ""


def apply(name: str, share: Share, add: bool, running: bool) -> ShareChange:
    """Called with the machine's lock held, after config.json was written."""
    if not running:
        return ShareChange("next start")
    from .hostagent import control

    state_path = paths.machine(name).state
    state = store.read_json(state_path, {}) or {}
    if state.get("share_transport") != "sshfs" or share.sync:  # a sync share's first copy waits for a start
        # The guest agent's list of shares follows config.json now, so a container asking for the new folder
        # hears "not mounted in the VM ... restart" rather than "not shared ... mount add" (best effort: a
        # host agent that is down sends the list when it connects).
        try:
            control.call(paths.machine(name).control_socket, "push-shares", timeout=HOTPLUG_TIMEOUT_S)
        except (OSError, ValueError):
            pass
        return ShareChange("restart")
    holds = _sync_shares_within(name, share.path)
    if holds:  # an sshfs mount (or its lazy unmount) would hide (or take along) the sync copy's bind
        return ShareChange("restart", f"it holds the sync share {holds[0]}")
    op = "share-mount" if add else "share-unmount"
    try:
        answer = control.call(
            paths.machine(name).control_socket, op, timeout=HOTPLUG_TIMEOUT_S,
            share=share.path, readonly=share.readonly,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        return ShareChange("restart", f"the host agent did not answer ({exc})")
    if not answer.get("ok"):
        return ShareChange("restart", str(answer.get("error") or "the host agent refused it"))
    started = [s for s in state.get("shares") or [] if s.get("path") != share.path]
    if add:
        started.append({"path": share.path, "readonly": share.readonly})
    store.write_json(state_path, state | {"shares": started})
    return ShareChange("now")


def _sync_shares_within(name: str, path: str) -> list[str]:
    from .config import shares_in
    from .share_nesting import sync_paths_within

    return sync_paths_within(shares_in(paths.machine(name).config), path)


def phrase(change: ShareChange, name: str, add: bool) -> str:
    """The parenthesis the CLI and the desktop app print after the change."""
    if change.when == "now":
        return "mounted in the VM now" if add else "unmounted in the VM now"
    if change.when == "next start":
        return "applies at the next start"
    why = f"not at once: {change.problem}; " if change.problem else ""
    return f"{why}restart to apply: pymachine restart {name}"


PENDING_NOTES = {"add": "(restart to apply)", "remove": "(removed: restart to apply)"}


def note(share: dict[str, object]) -> str:
    """What `mount list` and the app's share list say after a share (an entry of `Machine.shares`): a change
    waiting for the next start, else a sync share's state (in sync | N pending | syncing | error: …)."""
    return PENDING_NOTES.get(str(share.get("pending") or ""), "") or str(share.get("sync_state") or "")
