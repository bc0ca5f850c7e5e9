"""The guest agent's safety primitives under the faults that broke them (issue 16), on the real agent:
two threads saving one record at once, a record left empty or torn on disk, and connections that
close under the pump threads of attach, exec and logs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
from pathlib import Path

import docker
import pytest
from support.agent import running_agent

B = "pymachine/busybox"


def test_concurrent_kill_loops_get_no_500(tmp_path: Path) -> None:
    """`docker kill -s TERM` of a container that ignores it saves the container's state on every call; two
    loops at once used to collide on one temp file name per process (85 of 300 calls answered 500)."""
    with running_agent(tmp_path) as agent:
        agent.load_busybox()
        cid = agent.docker(
            "run", "-d", B, "sh", "-c", "trap '' TERM; while :; do sleep 1; done"
        ).stdout.strip()

        def kill_loop(n: int) -> list[tuple[int, bytes]]:
            bad = []
            for _ in range(n):
                status, _, body = agent.request("POST", f"/containers/{cid}/kill?signal=SIGTERM")
                if status != 204:
                    bad.append((status, body))
            return bad

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(kill_loop, [150, 150]))
        assert results == [[], []], f"failed kills: {results[0][:3] + results[1][:3]}"
        assert json.loads(agent.request("GET", f"/containers/{cid}/json")[2])["State"]["Running"]
        assert "Traceback" not in agent.log_path.read_text(errors="replace")


def test_corrupt_records_do_not_break_listings(tmp_path: Path) -> None:
    """An empty volume.json (a crash of an older agent between create and write, or a full disk) and a torn
    network record must not turn `docker volume ls`, `-v` of that volume or `network ls` into a 500: the
    listing skips what it cannot read and says so in the agent log."""
    with running_agent(tmp_path) as agent:
        agent.load_busybox()
        agent.docker("volume", "create", "good")
        agent.docker("volume", "create", "empty")
        agent.docker("network", "create", "torn")
        (agent.state_dir / "volumes" / "empty" / "volume.json").write_text("")
        records = [p for p in agent.state_dir.rglob("*.json") if "torn" in p.read_text(errors="replace")]
        net_record = next(p for p in records if p.parent.name == "networks")
        net_record.write_text(net_record.read_text()[:20])

        ls = agent.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert "good" in ls
        assert "empty" in ls  # repaired: the folder and its data are there, so the volume is too
        out = agent.docker(
            "run", "--rm", "-v", "empty:/data", B, "sh", "-c", "echo ok > /data/f && cat /data/f"
        )
        assert out.stdout.strip() == "ok"
        assert agent.docker("volume", "inspect", "empty", "--format", "{{.Name}}").stdout.strip() == "empty"
        agent.docker("network", "ls")
        assert agent.request("GET", "/volumes")[0] == 200
        log = agent.log_path.read_text(errors="replace")
        assert "volume.json" in log and "unreadable" in log


def test_no_double_close_under_attach_exec_logs_stress(tmp_path: Path) -> None:
    """Clients that hang up in the middle of attach, exec and `logs -f` streams: every connection and pipe
    is closed exactly once, so the agent log has no EBADF (closing an fd number twice closes whatever
    another thread opened under that number meanwhile)."""
    with running_agent(tmp_path) as agent:
        agent.load_busybox()
        client = agent.client()
        ctr = client.containers.run(
            B, ["sh", "-c", "while :; do echo tick; sleep 0.05; done"], detach=True, stdin_open=True
        )
        errors: list[str] = []
        lock = threading.Lock()

        def attach_once(i: int) -> None:
            sock = client.api.attach_socket(ctr.id, params={"stdout": 1, "stream": 1, "stdin": i % 2})
            sock._sock.recv(64)
            sock._sock.close()

        def exec_once(i: int) -> None:
            if i % 3 == 0:
                out = ctr.exec_run(["echo", "x"]).output
                assert out == b"x\n", out
            else:
                eid = client.api.exec_create(ctr.id, ["cat"], stdin=True, tty=i % 3 == 2)["Id"]
                sock = client.api.exec_start(eid, socket=True, tty=i % 3 == 2)
                sock._sock.sendall(b"hello\n")
                sock._sock.recv(16)
                sock._sock.close()
                if i % 3 == 2:  # a resize racing the end of the session (its pty closing)
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.exec_resize(eid, height=30, width=100)

        def logs_once(i: int) -> None:
            stream = client.api.logs(ctr.id, stream=True, follow=True, tail=5)
            next(stream)
            stream.close()

        def run(i: int) -> None:
            try:
                (attach_once, exec_once, logs_once)[i % 3](i)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

        # meanwhile a container that exits and is restarted by its policy: each run is a new exit watch
        client.containers.run(
            B, ["sh", "-c", "sleep 0.2; exit 3"], detach=True, restart_policy={"Name": "always"}
        )
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(run, range(180)))
        assert errors == []
        assert ctr.exec_run(["echo", "alive"]).output == b"alive\n"
        ctr.remove(force=True)
        log = agent.log_path.read_text(errors="replace")
        assert "Bad file descriptor" not in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]


def test_agent_log_rotates_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest init runs the agent with --log-file; the file stays bounded however long the agent runs."""
    monkeypatch.setenv("PYMACHINE_LOG_MAX_BYTES", "20000")
    log_file = tmp_path / "rot.log"
    with running_agent(tmp_path / "a", ["--log-file", str(log_file)]) as agent:
        for _ in range(600):  # each request is a DEBUG line
            assert agent.request("GET", "/_ping")[0] == 200
        rotated = log_file.with_name("rot.log.1")
        assert rotated.exists()
        assert log_file.stat().st_size <= 20000 and rotated.stat().st_size <= 20000
        assert "GET /_ping" in log_file.read_text()
