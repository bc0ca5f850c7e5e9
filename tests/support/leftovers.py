"""Kernel leftovers of killed test runs: the nftables tables and links of test agents (support/agent.py).

A test agent's names carry a random tag: table `pmt_<tag>`, bridges `pt<tag>0` and `pt<tag>-*`, veths
`pv<tag>*`. `Agent.stop` drops them; a run killed with -9 (or by a CI timeout) leaves them behind, and a
leftover bridge holding a route into 10.N once made a later run fail. At session start `sweep()` removes those
that belong to no living process, and never another running session's:

- the session that starts an agent claims the tag in OWNERS/<tag> (its pid and that process's start time, so a
  reused pid does not keep a dead session's leftovers);
- a tag named in the environment of a living process (a running agent's PYMACHINE_AGENT_NETWORK) is alive
  too, which also protects sessions running code older than the owner files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

OWNERS = Path(os.environ.get("PYMACHINE_TEST_OWNERS", "/run/pymachine-tests/owners"))  # tmpfs: reboot clears
TAG = r"[a-z0-9]{3}"
_TABLE = re.compile(rf"^pmt_({TAG})$")
_BRIDGE = re.compile(rf"^pt({TAG})(?:0|-.+)$")
_VETH = re.compile(rf"^pv({TAG})")
_ENV_TABLE = re.compile(rf'"nft_table":\s*"pmt_({TAG})"')


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def tag_of(network_options: dict) -> str | None:
    """The tag of a test agent's network options (isolated_network_options), None for other names."""
    m = _TABLE.match(str(network_options.get("nft_table", "")))
    return m.group(1) if m else None


def claim(tag: str, pid: int | None = None, owners: Path | None = None) -> None:
    """Record that process `pid` (default: this one) owns the kernel objects of `tag` (in `owners`, default
    OWNERS)."""
    pid = pid or os.getpid()
    owners = owners or OWNERS
    owners.mkdir(parents=True, exist_ok=True)
    tmp = owners / f".{tag}.{os.getpid()}"
    tmp.write_text(f"{pid} {_start_time(pid)}\n")
    tmp.replace(owners / tag)


def release(tag: str, owners: Path | None = None) -> None:
    with contextlib.suppress(OSError):
        ((owners or OWNERS) / tag).unlink()


def _claim_alive(path: Path) -> bool:
    try:
        pid_text, start = path.read_text().split()
        return _start_time(int(pid_text)) == start
    except (OSError, ValueError):
        return False


def living_tags() -> set[str]:
    """Tags that a living process claimed or carries in its environment."""
    alive = set()
    if OWNERS.is_dir():
        alive |= {p.name for p in OWNERS.iterdir() if not p.name.startswith(".") and _claim_alive(p)}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"PYMACHINE_AGENT_NETWORK=" in environ:
            alive |= set(_ENV_TABLE.findall(environ.decode(errors="replace")))
    return alive


@dataclass
class Found:
    tables: dict[str, str] = field(default_factory=dict)  # name → tag
    links: dict[str, str] = field(default_factory=dict)


def found() -> Found:
    """Every test agent's table and link on this host, with its tag."""
    out = Found()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    for line in tables.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "ip" and (m := _TABLE.match(parts[2])):
            out.tables[parts[2]] = m.group(1)
    proc = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True)
    for link in json.loads(proc.stdout or "[]"):
        name, kind = link.get("ifname", ""), link.get("linkinfo", {}).get("info_kind")
        m = (_BRIDGE.match(name) if kind == "bridge" else None) or (
            _VETH.match(name) if kind == "veth" else None
        )
        if m:
            out.links[name] = m.group(1)
    return out


def sweep(only: Collection[str] | None = None) -> list[str]:
    """Remove the tables and links of tags no living process owns, and their owner files; what was removed.
    `only`: look at these tags alone. A test of the sweep that reads claims of its own (not OWNERS) passes
    its tags: every other session's would look dead to it, and a restarted agent's names (claimed, but no
    process between its stop and its start) went with them."""
    have = found()
    alive = living_tags()

    def to_remove(tag: str) -> bool:
        return tag not in alive and (only is None or tag in only)

    removed = []
    for name, tag in have.links.items():
        if (
            to_remove(tag)
            and subprocess.run(["ip", "link", "del", name], capture_output=True).returncode == 0
        ):
            removed.append(f"link {name}")
    for name, tag in have.tables.items():
        if to_remove(tag):
            subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True)
            removed.append(f"nft table {name}")
    if OWNERS.is_dir():
        # Each claim is looked at again, not looked up in `alive`: a claim written since `alive` was read
        # (an agent starting beside this sweep) is not this sweep's to remove; releasing it left that agent's
        # names to the next session's sweep.
        for path in OWNERS.iterdir():
            if (
                not path.name.startswith(".")
                and (only is None or path.name in only)
                and not _claim_alive(path)
            ):
                release(path.name)
    return removed
