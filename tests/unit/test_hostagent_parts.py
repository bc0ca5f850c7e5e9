"""Host agent pieces that need no SSH: the guest HTTP stream parser (over a socketpair), the control socket,
the pid-file liveness rule, and the container CLI's option parsing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pymachine.hostvm import containers, paths
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.hostagent import control, guestapi, launcher


def _chunk(obj: object) -> bytes:
    data = json.dumps(obj).encode() + b"\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_event_stream_parses_chunks_split_anywhere_and_reports_idle() -> None:
    host, guest = socket.socketpair()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = _chunk({"type": "hello"}) + _chunk({"type": "port", "action": "add", "host_port": 1})

    def serve() -> None:
        guest.recv(4096)  # the request
        payload = head + body
        # dribble it out, with a pause mid-chunk longer than the idle timeout
        cut = len(head) + 7
        guest.sendall(payload[:cut])
        time.sleep(0.3)
        guest.sendall(payload[cut:])
        time.sleep(0.3)
        guest.sendall(b"0\r\n\r\n")
        guest.close()

    threading.Thread(target=serve, daemon=True).start()
    items = list(guestapi.stream_events(host, idle=0.1))  # type: ignore[arg-type]
    objs = [i for i in items if i is not None]
    assert objs == [{"type": "hello"}, {"type": "port", "action": "add", "host_port": 1}]
    assert None in items  # idle ticks were reported, and did not lose our place in the chunk


def test_request_reads_content_length_body() -> None:
    host, guest = socket.socketpair()

    def serve() -> None:
        req = guest.recv(4096)
        assert req.startswith(b"POST /pymachine/v1/ports/ack HTTP/1.1\r\n")
        body = b'{"id": "x", "ok": true}'
        guest.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    threading.Thread(target=serve, daemon=True).start()
    status, answer = guestapi.request(host, "POST", "/pymachine/v1/ports/ack", {"id": "x", "ok": True})  # type: ignore[arg-type]
    assert (status, answer) == (200, {"id": "x", "ok": True})


def test_non_http_answer_is_an_error() -> None:
    host, guest = socket.socketpair()

    def serve() -> None:
        guest.recv(4096)
        guest.sendall(b"garbage\n")
        guest.close()

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(guestapi.GuestApiError):
        list(guestapi.stream_events(host))  # type: ignore[arg-type]


def test_control_socket_round_trip_and_errors(tmp_path: Path) -> None:
    def handler(req: dict) -> dict:
        if req["op"] == "boom":
            raise RuntimeError("exploded")
        return {"ok": True, "echo": req}

    server = control.ControlServer(tmp_path / "c.sock", handler)
    server.start()
    try:
        assert (tmp_path / "c.sock").stat().st_mode & 0o777 == 0o600
        assert control.call(tmp_path / "c.sock", "status", x=1) == {
            "ok": True,
            "echo": {"op": "status", "x": 1},
        }
        failed = control.call(tmp_path / "c.sock", "boom")
        assert failed["ok"] is False and "exploded" in failed["error"]
    finally:
        server.stop()
    with pytest.raises(OSError):
        control.call(tmp_path / "c.sock", "status")


def test_agent_pid_follows_the_lock_not_the_file(pymachine_home: Path) -> None:
    mp = paths.machine("m1")
    mp.dir.mkdir(parents=True)
    assert launcher.agent_pid("m1") is None
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from pymachine.hostvm.hostagent.daemon import acquire_lock;"
            "fd = acquire_lock(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()",
            str(mp.agent_pid),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert launcher.agent_pid("m1") == holder.pid
        from pymachine.hostvm.hostagent.daemon import acquire_lock

        assert acquire_lock(mp.agent_pid) is None  # a second agent would leave
    finally:
        holder.kill()
        holder.wait()
    # the file is still there after kill -9, but nobody holds the lock: dead
    assert mp.agent_pid.exists()
    assert launcher.agent_pid("m1") is None


def test_docker_host_and_context_names(pymachine_home: Path) -> None:
    assert launcher.docker_host("web") == f"unix://{pymachine_home}/m/web/docker.sock"
    assert launcher.context_name("web") == "pymachine-web"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (["8080:80"], {"80/tcp": 8080}),
        (["127.0.0.1:8080:80"], {"80/tcp": ("127.0.0.1", 8080)}),
        (["5353:53/udp"], {"53/udp": 5353}),
        (["80"], {"80/tcp": None}),
        (["8080:80", "8081:80"], {"80/tcp": [8080, 8081]}),
    ],
)
def test_publish_options(spec: list[str], expected: dict) -> None:
    assert containers.parse_ports(spec) == expected


@pytest.mark.parametrize("bad", ["8080:http", "80/sctp", "a:b:c:d"])
def test_bad_publish_options(bad: str) -> None:
    with pytest.raises((UsageError, ValueError)):
        containers.parse_ports([bad])


def test_env_options_take_bare_names_from_this_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TEST_VAR", "v1")
    monkeypatch.delenv("PM_TEST_UNSET", raising=False)
    assert containers.parse_env(["A=1", "PM_TEST_VAR", "PM_TEST_UNSET"]) == ["A=1", "PM_TEST_VAR=v1"]


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("pymachine/busybox", "pymachine/busybox"),
        ("pymachine/debian:latest", "pymachine/debian"),
        ("pymachine/debian:bookworm", "pymachine/debian"),
        ("docker.io/pymachine/busybox", "pymachine/busybox"),
        ("pymachine/busybox:1.0", None),
        ("busybox", None),
    ],
)
def test_builtin_image_names(ref: str, name: str | None) -> None:
    assert containers.builtin_name(ref) == name


def test_docker_env_prints_an_eval_able_export(
    pymachine_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pymachine.app.cli.main import main
    from pymachine.hostvm import config, store

    paths.machine("web").dir.mkdir(parents=True)  # docker-env refuses a machine that does not exist
    cfg = config.build("web", ncpus_host=2, fallback_driver="qemu", home_mount=False)
    store.write_json(paths.machine("web").config, cfg.to_json())
    assert main(["docker-env", "web"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first == f"export DOCKER_HOST=unix://{pymachine_home}/m/web/docker.sock"
    env = subprocess.run(
        ["sh", "-c", f"eval $(cat <<'EOF'\n{out}EOF\n); echo $DOCKER_HOST"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert env.stdout.strip() == f"unix://{pymachine_home}/m/web/docker.sock"


def test_agent_archive_reproduces_the_checksum_the_guest_will_report(tmp_path: Path) -> None:
    """What re-provisioning ships must, once unpacked in the guest, hash to this host's checksum."""
    import io
    import tarfile

    from pymachine.hostvm.hostagent import provision
    from pymachine_agent import protocol

    with tarfile.open(fileobj=io.BytesIO(provision.agent_archive()), mode="r:gz") as tar:
        names = tar.getnames()
        assert all(n.startswith("pymachine_agent/") and ".." not in n for n in names)
        tar.extractall(tmp_path, filter="data")
    assert protocol.source_checksum(tmp_path / "pymachine_agent") == provision.local_checksum()


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("no", False)])
def test_reprovision_switch(value: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from pymachine.hostvm.hostagent import provision

    monkeypatch.setenv("PYMACHINE_AGENT_REPROVISION", value)
    assert provision.enabled() is expected


def test_a_source_checkout_does_not_reprovision_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymachine.hostvm.hostagent import provision

    monkeypatch.delenv("PYMACHINE_AGENT_REPROVISION", raising=False)
    assert provision.enabled() is False  # this test runs from the git checkout


def test_ps_row_shows_the_address_the_host_agent_really_bound() -> None:
    class Row:  # the fields of docker-py's Container that summary() reads
        id = "c" * 64
        name = "web"
        status = "running"
        image = None
        attrs = {
            "Config": {"Image": "pymachine/busybox", "Cmd": ["httpd", "-f"]},
            "State": {"Status": "running"},
            "NetworkSettings": {
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": None}
            },
        }

    forwards = [{"container": "c" * 64, "proto": "tcp", "host_port": 8080, "host_ip": "127.0.0.1"}]
    row = containers.summary(Row(), forwards)  # type: ignore[arg-type]
    assert row["Ports"] == "127.0.0.1:8080->80/tcp, 53/udp"
    assert containers.summary(Row())["Ports"].startswith("0.0.0.0:8080->80/tcp")  # type: ignore[arg-type]
    assert (row["ID"], row["Command"], row["Status"]) == ("c" * 12, "httpd -f", "Running")


class _EndedTransport:
    """A paramiko transport whose session ended (sshd restarted): opening a channel raises EOFError."""

    def open_session(self, timeout: float | None = None) -> None:
        raise EOFError()


def test_a_clock_check_on_a_link_that_just_ended_reports_it_as_an_event() -> None:
    """Seen in the privileged tier (sshd restart test) as an unhandled EOFError in the clock thread."""
    from types import SimpleNamespace

    from pymachine.hostvm.hostagent.daemon import Agent

    emitted: list[dict] = []
    agent = SimpleNamespace(
        clock={"last_check": None, "skew": None, "resyncs": 0},
        set_clock=True,
        events=SimpleNamespace(emit=lambda kind, **kw: emitted.append({"kind": kind, **kw})),
    )
    Agent.sync_clock(agent, _EndedTransport())  # type: ignore[arg-type]
    assert [e["kind"] for e in emitted] == ["clock"] and emitted[0]["ok"] is False
