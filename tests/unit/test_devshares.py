"""The device shares around a save, by the guest agent (pymachine_agent/devshares.py): `POST
/pymachine/v1/quiesce` before it and `POST /pymachine/v1/remount` after the resume. What a request may ask
(only a share's own path, only its device transports), the quiesce's refusals (a container with a share
mounted, a busy share) that leave every share mounted, the retries while a re-plugged device is probed, and
`start`'s side (savestate.AfterResume): the agent's answer, or the script when it cannot."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pymachine.hostvm import savestate
from pymachine.hostvm.domain import ShareDevice
from pymachine.hostvm.hostagent import parking
from pymachine_agent import devshares, protocol
from pymachine_agent.api import system
from pymachine_agent.api.server import ApiServer, Router
from pymachine_agent.events import EventBus, PortBroker
from pymachine_agent.protocol import DeviceShare
from pymachine_agent.shares import Share, Shares

LISTED = {"/home/me": False, "/srv/ro": True}
HOME = {"tag": "pm0", "path": "/home/me", "transport": "virtiofs", "readonly": False}


def test_a_device_shares_request_is_parsed_against_the_share_list() -> None:
    ro = {"tag": "pm1", "path": "/srv/ro", "transport": "9p", "readonly": False}
    shares, wait_s = protocol.parse_device_shares(protocol.device_shares_request([HOME, ro], 12), LISTED)
    assert shares == [
        DeviceShare("pm0", "/home/me", "virtiofs", False),
        DeviceShare("pm1", "/srv/ro", "9p", True),  # read-only in the agent's list: whatever it asks
    ]
    assert wait_s == 12
    assert (
        protocol.parse_device_shares({"shares": [], "wait_s": 10**6}, LISTED)[1]
        == protocol.REMOUNT_WAIT_MAX_S
    )
    assert protocol.parse_device_shares({"shares": []}, LISTED)[1] == 20.0


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
def test_a_device_shares_request_that_asks_for_more_is_refused(change: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        protocol.parse_device_shares({"shares": [HOME | change]}, LISTED)


@pytest.mark.parametrize("body", [None, [], {"shares": "x"}, {"shares": [], "wait_s": "1"}, {"shares": [1]}])
def test_a_malformed_remount_body_is_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        protocol.parse_device_shares(body, LISTED)


class FakeGuest:
    """Mounts that fail with ENODEV until the device has been 'probed' after `probe_after` attempts."""

    def __init__(self, probe_after: int = 0, already: frozenset[str] = frozenset()) -> None:
        self.probe_after, self.mounted, self.attempts, self.now = probe_after, set(already), 0, 0.0

    def mount(self, share: DeviceShare) -> None:
        self.attempts += 1
        if self.attempts <= self.probe_after:
            raise OSError(errno.ENOENT, "No such file or directory")
        self.mounted.add(share.path)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _remount(guest: FakeGuest, shares: list[DeviceShare], wait_s: float) -> dict[str, str | None]:
    return devshares.remount(
        shares,
        wait_s,
        mount=guest.mount,
        mounted=lambda s: s.path in guest.mounted,
        clock=lambda: guest.now,
        sleep=guest.sleep,
    )


def test_the_agent_retries_while_the_device_is_probed() -> None:
    guest = FakeGuest(probe_after=5)
    assert _remount(guest, [DeviceShare("pm0", "/home/me", "virtiofs", False)], 20) == {"/home/me": None}
    assert guest.attempts == 6 and guest.now == pytest.approx(5 * devshares.RETRY_S)


def test_a_device_that_never_comes_is_reported_after_the_wait() -> None:
    guest = FakeGuest(probe_after=10**6)
    result = _remount(guest, [DeviceShare("pm0", "/home/me", "virtiofs", False)], 1.0)
    assert result == {"/home/me": "No such file or directory"}
    assert guest.now == pytest.approx(1.0)


def test_a_share_still_mounted_is_left_as_it_is() -> None:
    guest = FakeGuest(already=frozenset({"/home/me"}))
    assert _remount(guest, [DeviceShare("pm0", "/home/me", "virtiofs", False)], 20) == {"/home/me": None}
    assert guest.attempts == 0


def _post(path: Path, body: object, op: str = "remount") -> tuple[int, Any]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    data = json.dumps(body).encode()
    head = b"POST /pymachine/v1/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % op.encode()
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
    monkeypatch.setattr(devshares, "mount_share", guest.mount)
    monkeypatch.setattr(devshares, "is_mounted", lambda s: s.path in guest.mounted)
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


# -- the save's quiesce --------------------------------------------------------------------------------------
def _proc(tmp_path: Path, namespaces: dict[int, tuple[str, str]]) -> str:
    """A /proc of processes {pid: (mount namespace, mountinfo)}; pid 1 is init's namespace."""
    for pid, (ns, mountinfo) in namespaces.items():
        (tmp_path / "ns").mkdir(exist_ok=True)
        (tmp_path / "ns" / ns).touch()
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        os.link(tmp_path / "ns" / ns, tmp_path / str(pid) / "ns" / "mnt")  # one namespace, one inode
        (tmp_path / str(pid) / "mountinfo").write_text(mountinfo)
    (tmp_path / "self").mkdir()  # not a process
    return str(tmp_path)


SHARE_LINE = "500 400 0:52 / /home/me rw,nosuid,nodev - virtiofs pm0 rw\n"
ROOT_LINE = "400 1 254:0 / / rw - ext4 /dev/vda rw\n"


def test_a_container_with_a_share_mounted_is_found(tmp_path: Path) -> None:
    proc = _proc(
        tmp_path,
        {1: ("init", ROOT_LINE + SHARE_LINE), 2: ("init", SHARE_LINE), 40: ("ctr", ROOT_LINE + SHARE_LINE)},
    )
    assert devshares.share_holder(proc) == 40


def test_containers_without_a_share_and_the_init_namespace_hold_nothing(tmp_path: Path) -> None:
    proc = _proc(
        tmp_path, {1: ("init", ROOT_LINE + SHARE_LINE), 7: ("init", SHARE_LINE), 8: ("ctr", ROOT_LINE)}
    )
    assert devshares.share_holder(proc) is None


A = DeviceShare("pm0", "/home/me", "virtiofs", False)
B = DeviceShare("pm1", "/srv/data", "virtiofs", True)


class Guest:
    def __init__(self, busy: frozenset[str] = frozenset(), holder: int | None = None) -> None:
        self.mounted, self.busy, self.holder_pid, self.calls = {A.path, B.path}, busy, holder, []

    def quiesce(self) -> str | None:
        return devshares.quiesce(
            [A, B],
            sync=lambda: self.calls.append("sync"),
            holder=lambda: self.holder_pid,
            mounted=lambda s: s.path in self.mounted,
            umount=self.umount,
            mount=self.mount,
        )

    def umount(self, path: str) -> None:
        if path in self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.calls.append(f"umount {path}")
        self.mounted.discard(path)

    def mount(self, share: DeviceShare) -> None:
        self.calls.append(f"mount {share.path}")
        self.mounted.add(share.path)


def test_the_quiesce_flushes_then_unmounts_every_share() -> None:
    guest = Guest()
    assert guest.quiesce() is None
    assert guest.calls == ["sync", "umount /home/me", "umount /srv/data"] and not guest.mounted


def test_a_container_using_a_share_keeps_them_all_mounted() -> None:
    guest = Guest(holder=40)
    assert guest.quiesce() == "a container (pid 40) uses a shared folder"
    assert guest.calls == ["sync"] and guest.mounted == {A.path, B.path}


def test_a_busy_share_puts_back_the_ones_already_unmounted() -> None:
    guest = Guest(busy=frozenset({B.path}))
    assert guest.quiesce() == "/srv/data is busy in the VM: Device or resource busy"
    assert guest.calls == ["sync", "umount /home/me", "mount /home/me"] and guest.mounted == {A.path, B.path}


def test_the_quiesce_endpoint_takes_only_the_agents_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[DeviceShare]] = []
    monkeypatch.setattr(devshares, "quiesce", lambda shares: asked.append(shares) or None)
    router = Router()
    listed = [Share("/home/me"), Share("/srv/copy", transport="sync")]
    system.register(router, None, EventBus(), PortBroker(ack_timeout=5), None, Shares(listed))  # type: ignore[arg-type]
    srv = ApiServer(router, tmp_path / "a.sock")
    srv.start()
    try:
        assert _post(srv.socket_path, {"shares": [HOME]}, "quiesce") == (200, {"busy": None})
        assert asked == [[DeviceShare("pm0", "/home/me", "virtiofs", False)]]
        status, _ = _post(srv.socket_path, {"shares": [HOME | {"path": "/srv/copy"}]}, "quiesce")
        assert status == 400 and len(asked) == 1
    finally:
        srv.stop()


class _OneAnswer:
    """The host agent's opener, with a guest agent on the other end that gives one answer to one request."""

    def __init__(self, status: int, body: object, dockerd: object = None) -> None:
        self.status, self.body, self.dockerd, self.opener, self.asked = status, body, dockerd, self, []

    def open(self, _transport: object) -> socket.socket:
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        return ours

    def _serve(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as f:
            request_line, length = f.readline().decode(), 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                length = int(value) if name.lower() == "content-length" else length
            self.asked.append((request_line.split()[1], json.loads(f.read(length))))
            data = json.dumps(self.body).encode()
            head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(data)}\r\n\r\n"
            sock.sendall(head.encode() + data)


BUSY = "a container (pid 40) uses a shared folder"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"busy": None}, (0, "", "")),
        (
            200,
            {"busy": "a container (pid 40) uses a shared folder"},
            (3, "a container (pid 40) uses a shared folder", ""),
        ),
        (404, {"message": "page not found"}, None),  # an older guest agent: the script
        (400, {"message": "'/x' is not one of this machine's shares"}, None),  # the script decides then
    ],
)
def test_the_host_agent_quiesces_through_the_guest_agent_or_says_it_cannot(
    status: int, body: object, expected: tuple[int, str, str] | None
) -> None:
    agent = _OneAnswer(status, body)
    assert parking.Parking(agent)._quiesce(object(), [HOME], 10.0) == expected  # type: ignore[arg-type]
    assert agent.asked == [("/pymachine/v1/quiesce", {"shares": [HOME]})]


def test_a_cluster_nodes_dockerd_is_not_asked() -> None:
    agent = _OneAnswer(200, {"busy": None}, dockerd=object())
    assert parking.Parking(agent)._quiesce(object(), [HOME], 10.0) is None  # type: ignore[arg-type]
    assert parking.Parking(agent).remount([HOME]) == {"ok": False, "unsupported": True}
    assert agent.asked == []


def test_the_hosts_share_entries_are_what_the_guest_agent_parses() -> None:
    """`start` and `stop` send ShareDevice.guest() (machines._agent_remount/_agent_quiesce) as they are."""
    dev = ShareDevice("pm0", "/home/me", False, "virtiofs", "/m/pm0.sock")
    assert protocol.parse_device_shares(protocol.device_shares_request([dev.guest()]), LISTED) == (
        [DeviceShare("pm0", "/home/me", "virtiofs", False)],
        20.0,
    )
