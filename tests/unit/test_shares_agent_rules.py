"""Issue 13, the pure parts of the guest agent's bind rules (pymachine_agent/shares.py) and of protocol 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymachine_agent import protocol
from pymachine_agent.__main__ import read_settings
from pymachine_agent.mountinfo import _unescape
from pymachine_agent.runtime.spec import Mount
from pymachine_agent.shares import Share, ShareError, Shares, parse_shares


def _rules(tmp_path: Path, mounted: bool = True) -> Shares:
    shares = [Share(str(tmp_path / "home")), Share(str(tmp_path / "ro"), readonly=True)]
    for s in shares:
        Path(s.path).mkdir(exist_ok=True)
    return Shares(shares, "dev", "/run/pymachine/docker.sock", is_mount=lambda p: mounted)


def test_settings_shares_are_validated() -> None:
    assert parse_shares(None) is None
    assert parse_shares([]) == []
    assert parse_shares([{"path": "/home/me", "transport": "9p"}]) == [Share("/home/me", False, "9p")]
    for bad in ({"path": "/x"}, [{"path": "rel"}], [{"path": "/a/../b"}], ["/x"], [{"readonly": True}]):
        with pytest.raises(ValueError):
            parse_shares(bad)


def test_a_malformed_share_list_in_agent_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(json.dumps({"shares": [{"path": "home"}]}))
    with pytest.raises(ValueError, match="agent.json: share path 'home' must be absolute"):
        read_settings(tmp_path / "agent.json")


def test_without_shares_nothing_changes(tmp_path: Path) -> None:
    m = [Mount("bind", "/app", "/srv/x")]
    assert Shares(None).check(m, ["/srv/x:/app"]) == m
    assert Shares(None).watched(m) == set()


def test_the_rules(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    home = tmp_path / "home"
    with pytest.raises(ShareError) as err:
        rules.check([Mount("bind", "/app", "/srv/x")], ["/srv/x:/app"])
    assert err.value.status == 400
    assert err.value.message == (
        f"path /srv/x is not shared with machine 'dev': pymachine mount add dev /srv/x; "
        f"shared now: {home}, {tmp_path / 'ro'} (ro)"
    )
    # -v makes the missing folder, --mount does not; a trailing slash or `..` is normalised first
    [m] = rules.check([Mount("bind", "/app", f"{home}/a/b/")], [f"{home}/a/b/:/app"])
    assert m.source == f"{home}/a/b" and (home / "a" / "b").is_dir()
    with pytest.raises(ShareError, match="bind source path does not exist"):
        rules.check([Mount("bind", "/app", f"{home}/c")], [])
    [m] = rules.check([Mount("bind", "/app", str(tmp_path / "ro"))], [])
    assert m.readonly
    [m] = rules.check([Mount("bind", "/s", "/var/run/docker.sock")], ["/var/run/docker.sock:/s"])
    assert m.source == "/run/pymachine/docker.sock"
    volume = Mount("volume", "/v", "/var/lib/pymachine/volumes/x/_data")
    assert rules.check([volume], []) == [volume]
    assert rules.watched([Mount("bind", "/a", f"{home}/a/b"), volume]) == {f"{home}/a/b"}


def test_an_unmounted_share_is_503(tmp_path: Path) -> None:
    with pytest.raises(ShareError) as err:
        _rules(tmp_path, mounted=False).check([Mount("bind", "/a", str(tmp_path / "home"))], [])
    assert err.value.status == 503 and "is not mounted in the VM" in err.value.message


def test_mountinfo_escapes() -> None:
    assert _unescape(r"/home/me/My\040Projects") == "/home/me/My Projects"


def test_protocol_2_shapes() -> None:
    assert protocol.PROTOCOL_VERSION == 3
    assert protocol.parse_watch(protocol.watch_event(["/b", "/a"])) == ["/a", "/b"]
    with pytest.raises(ValueError):
        protocol.parse_watch({"type": "watch", "paths": ["rel"]})
    ok = [{"path": "/a", "exists": True, "mode": 0o644}, {"path": "/b", "exists": False}]
    assert protocol.parse_fs_changes({"changes": ok}) == ok
    for bad in (
        {"changes": [{"path": "/a", "mode": "644"}]},
        {"changes": [{"path": "/a", "mode": 0o10000}]},
        {"changes": [{"path": "a", "exists": False}]},
        {"changes": [{"path": "/a", "mode": True}]},
        {"changes": [{"path": "/a", "exists": False}] * (protocol.MAX_FS_CHANGES + 1)},
        [],
    ):
        with pytest.raises(ValueError):
            protocol.parse_fs_changes(bad)


def test_the_agent_lists_its_shares_as_the_host_agent_sends_them(tmp_path: Path) -> None:
    """`/pymachine/v1/info` carries the agent's share list in the PUT's shape: a cold boot's seed gave it the
    host's list already, and the host agent then sends nothing (protocol.same_shares)."""
    seeded = parse_shares(
        [
            {"path": "/home/u", "readonly": False, "transport": "virtiofs"},
            {"path": "/data", "readonly": True, "transport": "9p"},
            {"path": "/home/u/app", "readonly": False, "transport": "sync"},
        ]
    )
    listed = Shares(seeded).listed()
    host_body = [  # what push_shares sends for the same config, in another order
        {"path": "/data", "readonly": True},
        {"path": "/home/u/app", "readonly": False, "transport": "sync"},
        {"path": "/home/u", "readonly": False},
    ]
    assert protocol.same_shares(listed, host_body)
    assert not protocol.same_shares(listed, host_body[:2])  # a share added since the boot: sent
    assert not protocol.same_shares(listed, [{**host_body[0], "readonly": False}, *host_body[1:]])
    assert (
        not protocol.same_shares(None, host_body)
        and not protocol.same_shares("x", [])
        and not protocol.same_shares([1], [])
    )
    assert Shares(None).listed() is None and protocol.same_shares(Shares([]).listed(), [])


def test_the_init_mount_report_is_read_as_written(tmp_path: Path) -> None:
    from pymachine_agent.shares import mount_report

    report = tmp_path / "shares.json"
    assert mount_report(str(report)) is None  # none written (an older init, no shares)
    entries = [{"path": "/a", "tag": "s0", "transport": "virtiofs", "error": None}]
    report.write_text(json.dumps(entries))
    assert mount_report(str(report)) == entries
    report.write_text("{not json")
    assert mount_report(str(report)) is None
    report.write_text('{"path": "/a"}')
    assert mount_report(str(report)) is None
