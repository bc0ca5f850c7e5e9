"""A resume's share remount by the guest agent (`POST /pymachine/v1/remount`, pymachine_agent/remount.py):
what a request may ask (only a share's own path, only its device transports), the retries while a re-plugged
device is probed, and `start`'s side (savestate.AfterResume): the agent's answer, or the script when it
cannot."""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from pymachine.hostvm import savestate
from pymachine.hostvm.domain import ShareDevice
from pymachine_agent import protocol, remount
from pymachine_agent.api import system
from pymachine_agent.api.server import ApiServer, Router
from pymachine_agent.events import EventBus, PortBroker
from pymachine_agent.protocol import RemountShare
from pymachine_agent.shares import Share, Shares

LISTED = {"/home/me": False, "/srv/ro": True}
HOME = {"tag": "pm0", "path": "/home/me", "transport": "virtiofs", "readonly": False}


def test_a_remount_request_is_parsed_against_the_share_list() -> None:
    ro = {"tag": "pm1", "path": "/srv/ro", "transport": "9p", "readonly": False}
    shares, wait_s = protocol.parse_remount(protocol.remount_request([HOME, ro], 12), LISTED)
    assert shares == [
        RemountShare("pm0", "/home/me", "virtiofs", False),
        RemountShare("pm1", "/srv/ro", "9p", True),  # read-only in the agent's list: whatever it asks
    ]
    assert wait_s == 12
    assert protocol.parse_remount({"shares": [], "wait_s": 10**6}, LISTED)[1] == protocol.REMOUNT_WAIT_MAX_S
    assert protocol.parse_remount({"shares": []}, LISTED)[1] == 20.0


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"path": "/etc"}, "not one of this machine's shares"),  # a host folder mounted over the guest's /etc
        ({"path": "/home/me/../../etc"}, "not one of this machine's shares"),
        ({"path": "/home/me/sub"}, "not one of this machine's shares"),
        ({"tag": "pm0,cache=always"}, "bad share tag"),
        ({"tag": "/dev/vda"}, "bad share tag"),
        ({"transport": "ext4"}, "virtiofs or 9p"),
        ({"transport": "sync"}, "virtiofs or 9p"),
        ({"readonly": "no"}, "boolean readonly"),
    ],
)
def test_a_remount_request_that_asks_for_more_is_refused(change: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        protocol.parse_remount({"shares": [HOME | change]}, LISTED)


@pytest.mark.parametrize("body", [None, [], {"shares": "x"}, {"shares": [], "wait_s": "1"}, {"shares": [1]}])
def test_a_malformed_remount_body_is_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        protocol.parse_remount(body, LISTED)


class FakeGuest:
    """Mounts that fail with ENODEV until the device has been 'probed' after `probe_after` attempts."""

    def __init__(self, probe_after: int = 0, already: frozenset[str] = frozenset()) -> None:
        self.probe_after, self.mounted, self.attempts, self.now = probe_after, set(already), 0, 0.0

    def mount(self, share: RemountShare) -> None:
        self.attempts += 1
        if self.attempts <= self.probe_after:
            raise OSError(errno.ENOENT, "No such file or directory")
        self.mounted.add(share.path)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _remount(guest: FakeGuest, shares: list[RemountShare], wait_s: float) -> dict[str, str | None]:
    return remount.remount(
        shares,
        wait_s,
        mount=guest.mount,
        mounted=lambda s: s.path in guest.mounted,
        clock=lambda: guest.now,
        sleep=guest.sleep,
    )


def test_the_agent_retries_while_the_device_is_probed() -> None:
    guest = FakeGuest(probe_after=5)
    assert _remount(guest, [RemountShare("pm0", "/home/me", "virtiofs", False)], 20) == {"/home/me": None}
    assert guest.attempts == 6 and guest.now == pytest.approx(5 * remount.RETRY_S)


def test_a_device_that_never_comes_is_reported_after_the_wait() -> None:
    guest = FakeGuest(probe_after=10**6)
    result = _remount(guest, [RemountShare("pm0", "/home/me", "virtiofs", False)], 1.0)
    assert result == {"/home/me": "No such file or directory"}
    assert guest.now == pytest.approx(1.0)


def test_a_share_still_mounted_is_left_as_it_is() -> None:
    guest = FakeGuest(already=frozenset({"/home/me"}))
    assert _remount(guest, [RemountShare("pm0", "/home/me", "virtiofs", False)], 20) == {"/home/me": None}
    assert guest.attempts == 0


def _post(path: Path, body: object) -> tuple[int, Any]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    data = json.dumps(body).encode()
    head = b"POST /pymachine/v1/remount HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Length: %d\r\n\r\n"
    s.sendall(head % len(data) + data)
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    s.close()
    head_end = raw.index(b"\r\n\r\n")
    return int(raw.split()[1]), json.loads(raw[head_end + 4 :] or b"null")


def test_the_endpoint_mounts_only_the_agents_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = FakeGuest()
    monkeypatch.setattr(remount, "mount_share", guest.mount)
    monkeypatch.setattr(remount, "is_mounted", lambda s: s.path in guest.mounted)
    listed = [Share("/home/me"), Share("/srv/ro", readonly=True), Share("/srv/copy", transport="sync")]
    events = EventBus()
    router = Router()
    system.register(router, None, events, PortBroker(ack_timeout=5), None, Shares(listed))  # type: ignore[arg-type]
    srv = ApiServer(router, tmp_path / "a.sock")
    srv.start()
    try:
        status, body = _post(srv.socket_path, {"shares": [HOME], "wait_s": 1})
        assert (status, body) == (200, {"mounted": {"/home/me": None}})
        assert guest.mounted == {"/home/me"}
        sync = HOME | {"path": "/srv/copy"}  # a sync share is a copy on the VM's disk: nothing to mount there
        for bad in ({"shares": [sync]}, {"shares": [HOME | {"path": "/"}]}, {"nothing": 1}):
            status, body = _post(srv.socket_path, bad)
            assert status == 400, body
        assert guest.mounted == {"/home/me"} and guest.attempts == 1
    finally:
        srv.stop()


DEVS = [
    ShareDevice("pm0", "/home/me", False, "virtiofs", "/m/pm0.sock"),
    ShareDevice("pm1", "/srv/copy", False, "sync", ""),
]


def _after_resume(remount_answer: dict[str, str | None] | None) -> tuple[list[str], list[str], list[Any]]:
    scripts: list[str] = []
    asked: list[Any] = []
    meta = {"shares": [d.__dict__ for d in DEVS]}

    def run(script: str) -> tuple[int, str, str]:
        scripts.append(script)
        return 0, "", ""

    def ask(devs: list[ShareDevice]) -> dict[str, str | None] | None:
        asked.append([d.path for d in devs])
        return remount_answer

    work = savestate.AfterResume("m", meta, run=run, remount=ask)
    return work.wait(time.monotonic() + 30), scripts, asked


def test_start_takes_the_agents_answer_and_names_a_share_it_could_not_mount() -> None:
    problems, scripts, asked = _after_resume({"/home/me": None})
    assert (problems, scripts, asked) == ([], [], [["/home/me"]])  # only the device share; no script
    problems, scripts, _ = _after_resume({"/home/me": "No such device"})
    assert scripts == [] and len(problems) == 1 and "/home/me: No such device" in problems[0]
    problems, _, _ = _after_resume({})
    assert len(problems) == 1 and "/home/me: not mounted" in problems[0]


def test_start_runs_the_script_when_the_agent_cannot() -> None:
    problems, scripts, asked = _after_resume(None)  # no host agent, or a guest agent that answers 404
    assert problems == [] and asked == [["/home/me"]]
    assert len(scripts) == 1 and "mount -t virtiofs -o nosuid,nodev pm0 /home/me" in scripts[0]
