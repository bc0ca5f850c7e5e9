"""docker-py 7 against our engine: the same scenarios through its high-level API."""

from __future__ import annotations

import io
import socket
import tarfile
import time
import urllib.request
from pathlib import Path

import docker
import docker.errors
import pytest
from support.agent import Agent

B = "pymachine/busybox"


@pytest.fixture
def dc(agent: Agent) -> docker.DockerClient:
    return agent.client()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_version_ping_info(dc: docker.DockerClient) -> None:
    assert dc.ping() is True
    assert dc.version()["ApiVersion"] == "1.44"
    assert dc.api.api_version == "1.44"
    info = dc.info()
    assert info["OSType"] == "linux" and info["Swarm"]["LocalNodeState"] == "inactive"


def test_run_returns_output_and_raises_container_error(dc: docker.DockerClient) -> None:
    assert dc.containers.run(B, ["echo", "hi"], remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as err:
        dc.containers.run(B, ["sh", "-c", "echo bad >&2; exit 3"], remove=True, stderr=True)
    assert err.value.exit_status == 3 and b"bad" in err.value.stderr


def test_run_detached_env_workdir_user_logs_wait(dc: docker.DockerClient) -> None:
    c = dc.containers.run(
        B,
        ["sh", "-c", 'echo "$A $(pwd) $(id -u)"; exit 2'],
        detach=True,
        environment={"A": "b"},
        working_dir="/tmp",
        user="65534",
        name="pyd",
    )
    try:
        assert c.wait()["StatusCode"] == 2
        assert c.logs() == b"b /tmp 65534\n"
        c.reload()
        assert c.status == "exited" and c.name == "pyd"
    finally:
        c.remove()


def test_ports_volumes_and_labels(dc: docker.DockerClient, tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "index.html").write_text("from a bind mount\n")
    c = dc.containers.run(
        B,
        ["httpd", "-f", "-p", "80", "-h", "/www"],
        detach=True,
        ports={"80/tcp": ("127.0.0.1", port)},
        volumes={str(tmp_path): {"bind": "/www", "mode": "ro"}},
        labels={"suite": "py"},
    )
    try:
        body = None
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        assert body == b"from a bind mount\n"
        c.reload()
        assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert [x.id for x in dc.containers.list(filters={"label": "suite=py"})] == [c.id]
    finally:
        c.remove(force=True)


def test_exec_run_stream_and_exit_codes(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sleep", "300"], detach=True)
    try:
        res = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"])
        assert res.exit_code == 4 and b"out" in res.output and b"err" in res.output
        res = c.exec_run(["sh", "-c", "echo a; echo b >&2"], demux=True)
        assert res.output == (b"a\n", b"b\n")
        res = c.exec_run(["sh", "-c", "test -t 1 && echo on-a-tty"], tty=True)
        assert res.exit_code == 0 and res.output == b"on-a-tty\r\n"
        top = c.top()
        assert any("sleep" in " ".join(p) for p in top["Processes"])
        stats = c.stats(stream=False)
        assert "cpu_stats" in stats and stats["name"] == "/" + c.name
    finally:
        c.remove(force=True)


def test_exec_tty_has_a_device_name(dc: docker.DockerClient) -> None:
    """`tty` inside `docker exec -t` prints /dev/pts/N in Docker (programs call ttyname on it)."""
    c = dc.containers.run(B, ["sleep", "300"], detach=True)
    try:
        res = c.exec_run("tty", tty=True)
        assert res.exit_code == 0 and res.output.startswith(b"/dev/pts/")
    finally:
        c.remove(force=True)


def test_put_and_get_archive(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sleep", "300"], detach=True)
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"payload\n"
            info = tarfile.TarInfo("put.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        assert c.put_archive("/tmp", buf.getvalue())
        stream, stat = c.get_archive("/tmp/put.txt")
        assert stat["name"] == "put.txt" and stat["size"] == 8
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile("put.txt").read() == b"payload\n"  # type: ignore[union-attr]
        assert c.diff() and any(ch["Path"] == "/tmp/put.txt" for ch in c.diff())
    finally:
        c.remove(force=True)


def test_images_tag_get_remove(dc: docker.DockerClient) -> None:
    img = dc.images.get(B)
    assert f"{B}:latest" in img.tags
    assert img.tag("pytag/box", "t1")
    assert "pytag/box:t1" in dc.images.get("pytag/box:t1").tags
    assert img.history()
    dc.images.remove("pytag/box:t1")
    with pytest.raises(docker.errors.ImageNotFound):
        dc.images.get("pytag/box:t1")
    with pytest.raises(docker.errors.NotFound):
        dc.containers.get("nope")


def test_networks_and_volumes(dc: docker.DockerClient) -> None:
    net = dc.networks.create("pynet", labels={"k": "v"})
    vol = dc.volumes.create("pyvol")
    try:
        assert dc.networks.get("pynet").name == "pynet"
        srv = dc.containers.run(B, ["sleep", "300"], detach=True, name="pysrv", network="pynet")
        try:
            out = dc.containers.run(B, ["ping", "-c", "1", "-W", "5", "pysrv"], network="pynet", remove=True)
            assert b"1 packets received" in out
            dc.containers.run(
                B, ["sh", "-c", "echo v > /v/f"], volumes={"pyvol": {"bind": "/v"}}, remove=True
            )
            assert dc.containers.run(B, ["cat", "/v/f"], volumes=["pyvol:/v:ro"], remove=True) == b"v\n"
        finally:
            srv.remove(force=True)
    finally:
        net.remove()
        vol.remove()
    assert "pyvol" not in [v.name for v in dc.volumes.list()]


def test_events_and_df(dc: docker.DockerClient) -> None:
    from datetime import datetime

    def engine_now() -> float:  # the engine's clock: a VM's may be a second or two off the host's
        return datetime.fromisoformat(dc.info()["SystemTime"].rstrip("Z")[:26] + "+00:00").timestamp()

    since = int(engine_now()) - 1
    dc.containers.run(B, ["true"], remove=True, name="pyevt")
    events = list(
        dc.events(since=since, until=int(engine_now()) + 1, decode=True, filters={"container": "pyevt"})
    )
    actions = [e["Action"] for e in events]
    assert "start" in actions and "die" in actions and "destroy" in actions
    df = dc.df()
    assert {"Images", "Containers", "Volumes"} <= set(df)


def test_pause_unpause_restart_rename(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sleep", "300"], detach=True, name="pyp")
    try:
        c.pause()
        c.reload()
        assert c.status == "paused"
        c.unpause()
        c.restart(timeout=1)
        c.reload()
        assert c.status == "running"
        c.rename("pyp2")
        c.reload()
        assert c.name == "pyp2"
    finally:
        c.remove(force=True)
