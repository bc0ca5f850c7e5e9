"""The session-start sweep (support/leftovers.py) removes the nft tables and bridges of test agents whose
owner is dead, and keeps those of a living session: claimed by a living process, or named in a running agent's
environment (sessions of code that writes no owner file)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import leftovers
from support.hostagent_vm import free_port, refused

REPO = Path(__file__).resolve().parents[2]
# The claims every session's sweep reads. The names these tests make are claimed there by this process, so
# the sweep of another session (CI beside a run of ours, a vm module's sweep, the session started below)
# keeps them: one removed a "living" tag's bridges in the middle of the first test. The sweeps under test
# read a private OWNERS instead, where the tests write the claims they are about, and look at the tests' own
# tags alone: every other tag looks dead to them.
SHARED_OWNERS = leftovers.OWNERS


@pytest.fixture
def owners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(leftovers, "OWNERS", tmp_path / "owners")  # never another session's claims
    return tmp_path / "owners"


def new_tag() -> str:
    taken = set(leftovers.found().tables.values()) | set(leftovers.found().links.values())
    while (tag := "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3))) in taken:
        pass
    return tag


def make_leftovers(tag: str) -> None:
    """What a killed agent leaves: its table, its default and one user bridge, a veth pair."""
    leftovers.claim(tag, owners=SHARED_OWNERS)  # other sessions' sweeps leave them to this test
    for cmd in (
        ["nft", "add", "table", "ip", f"pmt_{tag}"],
        ["ip", "link", "add", f"pt{tag}0", "type", "bridge"],
        ["ip", "link", "add", f"pt{tag}-1a2b3c", "type", "bridge"],
        ["ip", "link", "add", f"pv{tag}abcdef", "type", "veth", "peer", "name", f"pv{tag}peer"],
    ):
        subprocess.run(cmd, check=True, capture_output=True)


def present(tag: str) -> set[str]:
    now = leftovers.found()
    return {n for n, t in now.tables.items() if t == tag} | {n for n, t in now.links.items() if t == tag}


@pytest.fixture
def tags() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:  # whatever a failing test kept
        for name in present(tag):
            kind = ["nft", "delete", "table", "ip"] if name.startswith("pmt_") else ["ip", "link", "del"]
            subprocess.run([*kind, name], capture_output=True)
        leftovers.release(tag, owners=SHARED_OWNERS)


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"], env=env)


def test_leftovers_of_a_dead_session_go_and_a_living_sessions_stay(owners: Path, tags: list[str]) -> None:
    dead, living, reused = new_tag(), new_tag(), new_tag()
    tags += [dead, living, reused]
    gone, alive = sleeper(), sleeper()
    try:
        leftovers.claim(dead, gone.pid)
        leftovers.claim(living, alive.pid)
        (owners / reused).write_text(f"{alive.pid} 1\n")  # the pid lives, but it is another process now
        for tag in tags:
            make_leftovers(tag)
        gone.kill()
        gone.wait()
        removed = leftovers.sweep(only=tags)
        assert present(dead) == set() and present(reused) == set()
        assert present(living) == {
            f"pmt_{living}",
            f"pt{living}0",
            f"pt{living}-1a2b3c",
            f"pv{living}abcdef",
            f"pv{living}peer",
        }
        assert f"nft table pmt_{dead}" in removed and f"link pt{dead}0" in removed
        assert sorted(p.name for p in owners.iterdir()) == [living]
    finally:
        for p in (gone, alive):
            p.kill()
            p.wait()


def test_a_running_agent_without_an_owner_file_keeps_its_names(owners: Path, tags: list[str]) -> None:
    tag = new_tag()
    tags.append(tag)
    make_leftovers(tag)
    env = dict(os.environ, PYMACHINE_AGENT_NETWORK=json.dumps({"nft_table": f"pmt_{tag}"}))
    agent = sleeper(env)  # stands for an agent of a session that predates owner files
    try:
        leftovers.sweep(only=[tag])
        assert f"pmt_{tag}" in present(tag)
    finally:
        agent.kill()
        agent.wait()
    leftovers.sweep(only=[tag])
    assert present(tag) == set()


def test_a_test_session_sweeps_at_its_start(tmp_path: Path, tags: list[str]) -> None:
    tag = new_tag()
    tags.append(tag)
    gone = sleeper()
    gone.kill()
    gone.wait()
    make_leftovers(tag)  # what the killed session left
    # The session below sees every other session's claims, as it would in the shared folder, and this tag's
    # claim by the dead process.
    owners = tmp_path / "owners"
    shutil.copytree(SHARED_OWNERS, owners, ignore=shutil.ignore_patterns(".*"))
    env = dict(os.environ, PYMACHINE_TEST_OWNERS=str(owners), PYMACHINE_TIERS="unit,privileged")
    claim = f"from support import leftovers; leftovers.claim({tag!r}, {gone.pid})"
    subprocess.run([sys.executable, "-c", claim], env=dict(env, PYTHONPATH="tests"), check=True, cwd=REPO)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/unit/test_network_young.py"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert present(tag) == set()
    assert f"pmt_{tag}" in run.stderr


def test_a_leftover_dnat_makes_a_free_port_time_out_until_the_sweep(owners: Path, tags: list[str]) -> None:
    """Why test_pymachine_ssh_ignores_a_hostile_ssh_config once saw "timed out" where it asserts "refused": a
    killed agent's table still DNATs host traffic to a port it had published, into a bridge with nobody."""
    tag = new_tag()
    tags.append(tag)
    make_leftovers(tag)
    octet = random.choice(range(200, 250))
    port = free_port()
    subprocess.run(["ip", "addr", "add", f"10.{octet}.255.1/24", "dev", f"pt{tag}0"], check=True)
    subprocess.run(["ip", "link", "set", f"pt{tag}0", "up"], check=True)
    table = f"""table ip pmt_{tag} {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.1 tcp dport {port} dnat to 10.{octet}.255.2:80
  }}
}}
"""
    subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.pt{tag}0.route_localnet=1"], check=True)
    subprocess.run(["nft", "-f", "-"], input=table, text=True, check=True)
    with pytest.raises(TimeoutError):
        refused(port)
    leftovers.sweep(only=[tag])
    assert refused(port)


def test_a_sweep_for_some_tags_leaves_the_others_names(owners: Path, tags: list[str]) -> None:
    """Another session's names look dead to a sweep of private claims: those of an agent between its stop and
    its restart (claimed in the shared OWNERS, no process naming them), here `other`."""
    mine = new_tag()
    tags.append(mine)
    make_leftovers(mine)
    other = new_tag()
    tags.append(other)
    make_leftovers(other)
    removed = leftovers.sweep(only=[mine])
    assert present(mine) == set()
    assert len(present(other)) == 5 and not [r for r in removed if other in r], removed
