"""The real agent on this host, driven over raw HTTP: the wire behaviour Docker clients depend on.

- `wait` flushes its headers before the container starts (else `docker run` deadlocks);
- attach registered before start sees the earliest output; `logs=1` replays after exit;
- Docker's error statuses and texts;
- a start that publishes ports waits for the host agent's ack (contracts §4) and fails on a refusal.
"""

from __future__ import annotations

import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, start_agent

from pymachine_agent.api.streams import deframe

B = "pymachine/busybox"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_agent(Path(tmp_path_factory.mktemp("agent")), extra_args=["--ack-timeout", "5"])
    try:
        a.load_busybox()
        yield a
    finally:
        a.stop()


def _raw(agent: Agent, request: bytes, timeout: float = 30) -> tuple[socket.socket, object]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(agent.socket_path))
    s.sendall(request)
    return s, s.makefile("rb")


def _headers(f) -> tuple[int, dict[str, str]]:  # type: ignore[no-untyped-def]
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def _chunked(f) -> bytes:  # type: ignore[no-untyped-def]
    body = b""
    while True:
        n = int(f.readline().strip(), 16)
        if n == 0:
            f.readline()
            return body
        body += f.read(n)
        f.readline()


def _create(agent: Agent, body: dict, name: str = "") -> str:
    path = "/v1.44/containers/create" + (f"?name={name}" if name else "")
    status, _, data = agent.request("POST", path, {"Image": B, **body})
    assert status == 201, data
    return json.loads(data)["Id"]


def test_wait_headers_arrive_before_start(agent: Agent) -> None:
    cid = _create(agent, {"Cmd": ["sh", "-c", "exit 7"]})
    s, f = _raw(
        agent,
        f"POST /v1.44/containers/{cid}/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 0\r\n\r\n".encode(),
        timeout=10,
    )
    # nothing has started the container: the status line must still come now (the CLI waits for it)
    status, headers = _headers(f)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert agent.request("POST", f"/v1.44/containers/{cid}/start")[0] == 204
    assert json.loads(_chunked(f)) == {"StatusCode": 7, "Error": None}
    s.close()
    assert agent.request("DELETE", f"/v1.44/containers/{cid}")[0] == 204


def test_attach_before_start_sees_first_output_and_logs_replay(agent: Agent) -> None:
    cid = _create(
        agent,
        {"Cmd": ["sh", "-c", "echo first; echo second >&2"], "AttachStdout": True, "AttachStderr": True},
    )
    s, f = _raw(
        agent,
        f"POST /v1.44/containers/{cid}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\n"
        "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    status, headers = _headers(f)
    assert status == 101 and headers["content-type"] == "application/vnd.docker.multiplexed-stream"
    assert agent.request("POST", f"/v1.44/containers/{cid}/start")[0] == 204
    frames = deframe(f.read())  # ends when the container exits and the server closes
    assert (1, b"first\n") in frames and (2, b"second\n") in frames
    s.close()
    # after exit: attach with logs=1 replays, then the stream ends at once
    s, f = _raw(
        agent,
        f"POST /v1.44/containers/{cid}/attach?logs=1&stdout=1&stderr=1 HTTP/1.1\r\n"
        "Host: x\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    status, headers = _headers(f)
    assert status == 200 and headers["content-type"] == "application/vnd.docker.multiplexed-stream"
    assert sorted(deframe(f.read())) == [(1, b"first\n"), (2, b"second\n")]
    s.close()
    agent.request("DELETE", f"/v1.44/containers/{cid}")


def test_docker_error_statuses_and_texts(agent: Agent) -> None:
    status, _, body = agent.request("GET", "/v1.44/containers/nothere/json")
    assert status == 404 and json.loads(body) == {"message": "No such container: nothere"}
    status, _, body = agent.request("POST", "/v1.44/containers/create", {"Image": "nosuch/image"})
    assert status == 404 and json.loads(body)["message"] == "No such image: nosuch/image:latest"
    cid = _create(agent, {"Cmd": ["sleep", "30"]}, name="dup")
    status, _, body = agent.request(
        "POST", "/v1.44/containers/create?name=dup", {"Image": B, "Cmd": ["true"]}
    )
    assert status == 409 and 'The container name "/dup" is already in use' in json.loads(body)["message"]
    assert agent.request("POST", f"/v1.44/containers/{cid}/start")[0] == 204
    assert agent.request("POST", f"/v1.44/containers/{cid}/start")[0] == 304
    status, _, body = agent.request("DELETE", "/v1.44/containers/dup")
    assert status == 409 and "container is running" in json.loads(body)["message"]
    assert agent.request("POST", "/v1.44/containers/dup/kill")[0] == 204
    agent.request("POST", "/v1.44/containers/dup/wait")
    assert agent.request("POST", "/v1.44/containers/dup/stop")[0] == 304
    status, _, body = agent.request("POST", "/v1.44/containers/dup/exec", {"Cmd": ["true"]})
    assert status == 409 and "is not running" in json.loads(body)["message"]
    assert agent.request("DELETE", "/v1.44/containers/dup")[0] == 204
    status, _, body = agent.request("GET", "/v1.44/images/nosuch/json")
    assert status == 404 and "No such image" in json.loads(body)["message"]
    status, _, body = agent.request("GET", "/v1.44/volumes/nosuch")
    assert status == 404
    status, _, body = agent.request("GET", "/v1.44/networks/nosuch")
    assert status == 404


def test_events_filters_and_since(agent: Agent) -> None:
    since = time.time() - 0.5
    cid = _create(agent, {"Cmd": ["true"], "Labels": {"suite": "events"}}, name="evf")
    agent.request("POST", f"/v1.44/containers/{cid}/start")
    agent.request("POST", f"/v1.44/containers/{cid}/wait")
    agent.request("DELETE", f"/v1.44/containers/{cid}")
    filters = json.dumps({"label": ["suite=events"], "event": ["start", "destroy"]})
    from urllib.parse import quote

    status, _, body = agent.request(
        "GET", f"/v1.44/events?since={since}&until={time.time() + 0.5}&filters={quote(filters)}"
    )
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert status == 200
    assert [e["Action"] for e in events] == ["start", "destroy"]
    assert all(e["Actor"]["ID"] == cid and e["Actor"]["Attributes"]["name"] == "evf" for e in events)


class HostAgentStub:
    """Plays the host agent of contracts §4: subscribes, records port events, acks on command."""

    def __init__(self, agent: Agent) -> None:
        self.sock, self.f = _raw(agent, b"GET /pymachine/v1/events HTTP/1.1\r\nHost: x\r\n\r\n", timeout=60)
        _headers(self.f)
        self.events: list[dict] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                n = int(self.f.readline().strip() or b"0", 16)  # type: ignore[attr-defined]
                if n == 0:
                    return
                line = json.loads(self.f.read(n))  # type: ignore[attr-defined]
                self.f.readline()  # type: ignore[attr-defined]
                with self.cv:
                    self.events.append(line)
                    self.cv.notify_all()
        except (OSError, ValueError):
            return

    def wait_for(self, pred, timeout: float = 20) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                assert self.cv.wait(max(0.0, deadline - time.monotonic())), f"not seen; got {self.events}"

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_start_waits_for_the_host_agents_ack(agent: Agent) -> None:
    host = HostAgentStub(agent)
    host.wait_for(lambda e: e["type"] == "hello")
    port = _free_port()
    cid = _create(
        agent,
        {
            "Cmd": ["sleep", "60"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}},
        },
    )
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(agent.request("POST", f"/v1.44/containers/{cid}/start")[0])
    )
    t.start()
    add = host.wait_for(lambda e: e.get("action") == "add" and e["container"] == cid)
    assert add["host_port"] == port and add["proto"] == "tcp"
    time.sleep(1.0)  # a slow host agent: the start must still be pending
    assert not result, "start returned before the host agent acknowledged the port"
    status, _, _ = agent.request("POST", "/pymachine/v1/ports/ack", {"id": add["id"], "ok": True})
    assert status == 200
    t.join(20)
    assert result == [204]
    agent.request("DELETE", f"/v1.44/containers/{cid}?force=1")
    removed = host.wait_for(lambda e: e.get("action") == "remove" and e["container"] == cid)
    assert removed["host_port"] == port
    host.close()


def test_refused_ack_fails_the_start_naming_the_port(agent: Agent) -> None:
    host = HostAgentStub(agent)
    host.wait_for(lambda e: e["type"] == "hello")
    port = _free_port()
    cid = _create(
        agent, {"Cmd": ["sleep", "60"], "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": str(port)}]}}}
    )
    result: list[tuple[int, bytes]] = []

    def start() -> None:
        status, _, body = agent.request("POST", f"/v1.44/containers/{cid}/start")
        result.append((status, body))

    t = threading.Thread(target=start)
    t.start()
    add = host.wait_for(lambda e: e.get("action") == "add" and e["container"] == cid)
    refusal = f"host port 127.0.0.1:{port} is already in use"
    agent.request("POST", "/pymachine/v1/ports/ack", {"id": add["id"], "ok": False, "error": refusal})
    t.join(20)
    status, body = result[0]
    assert status >= 400 and refusal in json.loads(body)["message"]
    host.wait_for(lambda e: e.get("action") == "remove" and e["container"] == cid)
    state = json.loads(agent.request("GET", f"/v1.44/containers/{cid}/json")[2])["State"]
    assert state["Running"] is False
    agent.request("DELETE", f"/v1.44/containers/{cid}?force=1")
    host.close()


def test_save_and_load_leave_no_scratch_folders(agent: Agent, tmp_path: Path) -> None:
    # save streams and load stages in a tmp_dir() of its own that it removes (images/staging.py): neither
    # leaves a folder behind (other bodies spool through store.spool_dir(), one stable folder)
    tmp = agent.state_dir / "images" / "tmp"
    before = {p.name for p in tmp.iterdir()}
    out = tmp_path / "bb.tar"
    for _ in range(3):
        agent.docker("save", "-o", str(out), B)
        agent.docker("load", "-i", str(out))
    after = {p.name for p in tmp.iterdir()}
    assert after - before <= {"spool"}, after - before
    assert not (tmp / "spool").exists() or not any((tmp / "spool").iterdir())


def test_security_opt_seccomp_unconfined_lifts_the_default_filter(agent: Agent) -> None:
    # the default filter refuses unshare(CLONE_NEWUSER), as Docker's profile does without CAP_SYS_ADMIN
    confined = agent.docker("run", "--rm", B, "unshare", "-U", "true", check=False)
    assert confined.returncode != 0, confined
    assert "Operation not permitted" in confined.stderr, confined.stderr
    free = agent.docker(
        "run", "--rm", "--security-opt", "seccomp=unconfined", B, "unshare", "-U", "true", check=False
    )
    assert free.returncode == 0, (free.stderr, agent.log_tail())
    cid = agent.docker(
        "create", "--security-opt", "seccomp:unconfined", "--security-opt", "no-new-privileges", B
    ).stdout
    opts = agent.docker("inspect", "--format", "{{json .HostConfig.SecurityOpt}}", cid.strip()).stdout
    assert json.loads(opts) == ["seccomp:unconfined", "no-new-privileges"]
    agent.docker("rm", cid.strip())
    bad = agent.docker("run", "--rm", "--security-opt", "nosuch=1", B, "true", check=False)
    assert bad.returncode != 0 and 'invalid --security-opt 2: "nosuch=1"' in bad.stderr, bad.stderr  # ours


def _top_layer_names(agent: Agent, image: str, tmp_path: Path) -> set[str]:
    out = tmp_path / "img.tar"
    agent.docker("save", "-o", str(out), image)
    with tarfile.open(out) as tar:
        top = json.load(tar.extractfile("manifest.json"))[0]["Layers"][-1]  # type: ignore[arg-type]
        with tarfile.open(fileobj=tar.extractfile(top)) as layer:
            return {m.name.rstrip("/") for m in layer.getmembers()}


def test_commit_leaves_out_the_runtimes_etc_placeholders(agent: Agent, tmp_path: Path) -> None:
    cid = agent.docker("run", "-d", B, "sh", "-c", "echo x > /made.txt; sleep 300").stdout.strip()
    try:
        for _ in range(50):  # the shell writes /made.txt right after it starts
            if agent.docker("exec", cid, "cat", "/made.txt", check=False).returncode == 0:
                break
            time.sleep(0.1)
        agent.docker("commit", cid, "placeholders:1")
        names = _top_layer_names(agent, "placeholders:1", tmp_path)
        assert "made.txt" in names, names
        assert not names & {"etc/hosts", "etc/hostname", "etc/resolv.conf"}, names
        # the container's own upper dir was left alone: it can still write next to its mounted /etc files
        agent.docker("exec", cid, "sh", "-c", "echo y > /etc/later && cat /etc/hosts /etc/later")
        assert "127.0.0.1" in agent.docker("run", "--rm", "placeholders:1", "cat", "/etc/hosts").stdout
    finally:
        agent.docker("rm", "-f", cid, check=False)
        agent.docker("rmi", "placeholders:1", check=False)


def test_insecure_registries_from_agent_settings_reach_the_store(tmp_path: Path) -> None:
    settings = tmp_path / "agent.json"
    settings.write_text(json.dumps({"machine": "m", "insecure_registries": ["registry.test:5000"]}))
    a = start_agent(tmp_path / "a", extra_args=["--settings", str(settings), "--no-network"])
    try:
        info = json.loads(a.request("GET", "/v1.44/info")[2])
        assert info["RegistryConfig"]["IndexConfigs"]["registry.test:5000"]["Secure"] is False
        assert "registry.test:5000" in a.docker("info").stdout  # the CLI's "Insecure Registries:" list
    finally:
        a.stop()
