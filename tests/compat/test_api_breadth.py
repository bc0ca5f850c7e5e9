"""Issue 22: what a broad client suite found, each item used the way the failing client used it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import docker
import docker.errors
import pytest
from support.agent import Agent

B = "pymachine/busybox"


@pytest.fixture
def dc(agent: Agent) -> docker.DockerClient:
    return agent.client()


# --- swarm endpoints while swarm is off: dockerd's 503s -------------------------------------------------


def test_leave_swarm_force_is_nothing_to_leave(dc: docker.DockerClient) -> None:
    # docker-py takes the 503 "not part of a swarm" as success; a 404 raised NotFound, breaking teardowns
    assert dc.swarm.leave(force=True) is True


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.swarm.reload(),
        lambda c: c.nodes.list(),
        lambda c: c.services.list(),
        lambda c: c.secrets.list(),
        lambda c: c.configs.list(),
        lambda c: c.api.tasks(),
        lambda c: c.api.inspect_node("n1"),
        lambda c: c.api.remove_service("s1"),
    ],
    ids=["swarm", "nodes", "services", "secrets", "configs", "tasks", "node", "rm-service"],
)
def test_swarm_calls_answer_503_not_a_manager(dc: docker.DockerClient, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(docker.errors.APIError) as err:
        call(dc)
    assert err.value.status_code == 503
    assert "not a swarm manager" in str(err.value.explanation)


def test_swarm_init_is_refused_with_a_reason(dc: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        dc.swarm.init()
    assert err.value.status_code == 503
    assert "swarm mode is not supported" in str(err.value.explanation)


def test_cli_service_ls_says_not_a_manager(agent: Agent) -> None:
    out = agent.docker("service", "ls", check=False)
    assert out.returncode != 0
    assert "This node is not a swarm manager" in out.stderr


# --- create ------------------------------------------------------------------------------------------------


def test_env_entry_without_equals_is_kept_as_given(dc: docker.DockerClient) -> None:
    c = dc.containers.create(B, "true", environment=["FOO=bar", "BARE"])
    try:
        env = c.attrs["Config"]["Env"]
        assert "FOO=bar" in env and "BARE" in env
    finally:
        c.remove()


def test_unknown_log_driver_is_refused_at_create(dc: docker.DockerClient) -> None:
    from docker.types import LogConfig

    with pytest.raises(docker.errors.APIError) as err:
        dc.containers.create(B, "true", log_config=LogConfig(type="no-such-driver"))
    assert err.value.status_code == 400
    assert "no-such-driver" in str(err.value.explanation)


def test_host_config_runtime_is_runc(dc: docker.DockerClient) -> None:
    c = dc.containers.create(B, "true")
    try:
        assert c.attrs["HostConfig"]["Runtime"] == "runc"
    finally:
        c.remove()


def test_container_prune_reports_space_reclaimed(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sh", "-c", "head -c 300000 /dev/zero > /big"], detach=True)
    c.wait(timeout=60)
    result = dc.containers.prune()
    assert c.id in (result.get("ContainersDeleted") or [])
    assert result["SpaceReclaimed"] >= 300000


def test_bare_env_entry_is_kept_in_config_and_unset_in_the_process(agent: Agent) -> None:
    # `-e NOSUCHVAR` with no such variable in the CLI's own environment sends a bare "NOSUCHVAR": kept in
    # Config.Env, absent from the process (not "NOSUCHVAR=")
    assert "NOSUCHVAR" not in agent.env()
    name = "breadth-bare-env"
    out = agent.docker("run", "--name", name, "-e", "NOSUCHVAR", "-e", "SET=1", B, "env")
    try:
        assert "SET=1" in out.stdout and "NOSUCHVAR" not in out.stdout
        cfg = agent.docker("inspect", "-f", "{{json .Config.Env}}", name).stdout
        assert '"NOSUCHVAR"' in cfg
    finally:
        agent.docker("rm", "-f", name, check=False)


def test_log_driver_none_is_kept_and_logs_refuse_to_read(agent: Agent) -> None:
    name = "breadth-nolog"
    agent.docker("run", "--name", name, "--log-driver", "none", B, "echo", "hi")
    try:
        out = agent.docker("inspect", "-f", "{{.HostConfig.LogConfig.Type}}", name)
        assert out.stdout.strip() == "none"
        logs = agent.docker("logs", name, check=False)
        assert logs.returncode != 0 and "does not support reading" in logs.stderr
    finally:
        agent.docker("rm", "-f", name, check=False)


# --- health checks ------------------------------------------------------------------------------------------


def _wait(pred, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _health(agent: Agent, name: str) -> dict:
    out = agent.docker("inspect", "-f", "{{json .State.Health}}", name).stdout.strip()
    return json.loads(out) if out not in ("", "null", "<no value>") else {}


def test_health_cmd_becomes_healthy_with_log_events_and_ps_status(agent: Agent) -> None:
    name = "breadth-healthy"
    since = str(int(time.time()) - 1)
    agent.docker(
        "run", "-d", "--name", name, "--health-cmd", "test -e /tmp/ready && echo ok",
        "--health-interval", "300ms", "--health-retries", "100", B, "sleep", "600",
    )  # fmt: skip
    try:
        assert _health(agent, name)["Status"] == "starting"
        # a failing probe first (the file is missing), then the file appears and the next probe passes
        _wait(
            lambda: any(e["ExitCode"] == 1 for e in _health(agent, name).get("Log") or []),
            60,
            "a failed probe",
        )
        assert _health(agent, name)["Status"] == "starting"  # retries=100: failures alone do not flip it
        agent.docker("exec", name, "touch", "/tmp/ready")
        h = _wait(
            lambda: (_health(agent, name) or {}).get("Status") == "healthy" and _health(agent, name), 60
        )
        assert h["FailingStreak"] == 0 and h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "ok\n"
        ps = agent.docker("ps", "--filter", f"name={name}", "--format", "{{.Status}}").stdout
        assert "(healthy)" in ps
        healthy = agent.docker("ps", "-q", "--filter", "health=healthy", "--filter", f"name={name}").stdout
        assert healthy.strip()
        events = agent.docker(
            "events", "--since", since, "--until", str(int(time.time()) + 1),
            "--filter", f"container={name}", "--format", "{{.Action}}",
        ).stdout  # fmt: skip
        assert "health_status: healthy" in events
        agent.docker("stop", "-t", "1", name)
        assert _health(agent, name)["Status"] == "unhealthy"  # dockerd: a stopped monitor says unhealthy
    finally:
        agent.docker("rm", "-f", name, check=False)


def test_failing_check_turns_unhealthy_after_retries(dc: docker.DockerClient) -> None:
    c = dc.containers.run(
        B,
        "sleep 600",
        detach=True,
        healthcheck={"test": ["CMD-SHELL", "echo nope; exit 1"], "interval": 300_000_000, "retries": 2},
    )
    try:
        assert c.attrs["Config"]["Healthcheck"]["Retries"] == 2

        def state() -> dict:
            c.reload()
            return c.attrs["State"].get("Health") or {}

        h = _wait(lambda: state().get("Status") == "unhealthy" and state(), 60, "unhealthy")
        assert h["FailingStreak"] >= 2 and h["Log"][-1]["Output"] == "nope\n"
    finally:
        c.remove(force=True)


def test_check_timeout_is_a_failure_with_dockerds_message(dc: docker.DockerClient) -> None:
    c = dc.containers.run(
        B,
        "sleep 600",
        detach=True,
        healthcheck={
            "test": ["CMD", "sleep", "30"],
            "interval": 200_000_000,
            "timeout": 300_000_000,
            "retries": 1,
        },
    )
    try:

        def state() -> dict:
            c.reload()
            return c.attrs["State"].get("Health") or {}

        h = _wait(lambda: state().get("Status") == "unhealthy" and state(), 60, "unhealthy by timeout")
        assert h["Log"][-1]["ExitCode"] == -1
        assert "Health check exceeded timeout" in h["Log"][-1]["Output"]
        # the timed-out probe's process was killed, not left running in the container
        assert "sleep 30" not in c.exec_run("ps").output.decode()
    finally:
        c.remove(force=True)


def test_image_healthcheck_is_inherited_and_no_healthcheck_turns_it_off(agent: Agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(f'FROM {B}\nHEALTHCHECK --interval=300ms --retries=1 CMD ["true"]\n')
    agent.docker("build", "-q", "-t", "breadth-health-img", str(tmp_path))
    try:
        agent.docker("run", "-d", "--name", "breadth-img-hc", "breadth-health-img", "sleep", "600")
        agent.docker(
            "run",
            "-d",
            "--name",
            "breadth-img-nohc",
            "--no-healthcheck",
            "breadth-health-img",
            "sleep",
            "600",
        )
        _wait(lambda: _health(agent, "breadth-img-hc").get("Status") == "healthy", 60, "image check healthy")
        time.sleep(1)
        assert _health(agent, "breadth-img-nohc") == {}
        cfg = agent.docker("inspect", "-f", "{{json .Config.Healthcheck}}", "breadth-img-nohc").stdout
        assert '"NONE"' in cfg
    finally:
        agent.docker("rm", "-f", "breadth-img-hc", "breadth-img-nohc", check=False)
        agent.docker("rmi", "breadth-health-img", check=False)


def test_invalid_health_interval_is_a_400(dc: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.APIError) as err:
        dc.api.create_container(B, "true", healthcheck={"test": ["CMD", "true"], "interval": 1000})
    assert err.value.status_code == 400 and "less than 1ms" in str(err.value.explanation)


HEALTHY_COMPOSE = """\
version: "2.4"
services:
  db:
    image: pymachine/busybox
    command: ["sh", "-c", "sleep 2; touch /tmp/up; sleep 600"]
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/up"]
      interval: 300ms
      retries: 50
  app:
    image: pymachine/busybox
    command: ["sleep", "600"]
    depends_on:
      db:
        condition: service_healthy
"""


def test_compose_waits_for_a_healthy_dependency(agent: Agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from compat.test_compose import ensure_compose

    compose = ensure_compose()
    (tmp_path / "docker-compose.yml").write_text(HEALTHY_COMPOSE)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(compose), "-p", "pmhealth", *args]
        r = subprocess.run(cmd, cwd=tmp_path, env=agent.env(), capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"docker-compose {' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r

    run("up", "-d")
    try:
        # `up` returned only once db was healthy, so app started after that
        assert _health(agent, "pmhealth_db_1")["Status"] == "healthy"
        assert agent.docker("inspect", "-f", "{{.State.Running}}", "pmhealth_app_1").stdout.strip() == "true"
    finally:
        run("down", "-t", "1")


# --- docker cp and volumes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
def test_cp_into_and_out_of_a_volume(agent: Agent, tmp_path, started: bool) -> None:  # type: ignore[no-untyped-def]
    name = f"breadth-cpvol-{int(started)}"
    vol = f"breadth-cpvol-{int(started)}"
    agent.docker("create", "--name", name, "-v", f"{vol}:/vol1", B, "sleep", "600")
    try:
        if started:
            agent.docker("start", name)
        (tmp_path / "data.txt").write_text("into the volume\n")
        agent.docker("cp", str(tmp_path / "data.txt"), f"{name}:/vol1/data.txt")
        agent.docker("cp", f"{name}:/vol1/data.txt", str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "into the volume\n"
        agent.docker("cp", f"{name}:/vol1", str(tmp_path / "whole"))  # the mount's own folder, by its name
        assert (tmp_path / "whole" / "data.txt").read_text() == "into the volume\n"
        # it is in the volume, not hidden under it in the container's own layer
        seen = agent.docker("run", "--rm", "-v", f"{vol}:/v", B, "cat", "/v/data.txt").stdout
        assert seen == "into the volume\n"
    finally:
        agent.docker("rm", "-f", name, check=False)
        agent.docker("volume", "rm", vol, check=False)


def test_cp_into_a_read_only_volume_of_a_stopped_container_is_refused(agent: Agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name, vol = "breadth-cpro", "breadth-cpro"
    agent.docker("create", "--name", name, "-v", f"{vol}:/ro:ro", B, "true")
    try:
        (tmp_path / "x").write_text("x")
        out = agent.docker("cp", str(tmp_path / "x"), f"{name}:/ro/x", check=False)
        assert out.returncode != 0 and "read-only" in out.stderr
    finally:
        agent.docker("rm", "-f", name, check=False)
        agent.docker("volume", "rm", vol, check=False)


def test_cp_through_a_link_in_a_volume_stays_in_the_volume(agent: Agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # attack: a volume holds a link to the VM's /etc; cp into and out of it through a stopped container
    name, vol = "breadth-cplink", "breadth-cplink"
    agent.docker("run", "--rm", "-v", f"{vol}:/v", B, "sh", "-c", "ln -s /etc /v/etc; ln -s ../../.. /v/up")
    agent.docker("create", "--name", name, "-v", f"{vol}:/v", B, "true")
    try:
        (tmp_path / "evil").write_text("evil\n")
        agent.docker("cp", str(tmp_path / "evil"), f"{name}:/v/etc/pm-breadth-evil", check=False)
        agent.docker("cp", str(tmp_path / "evil"), f"{name}:/v/up/pm-breadth-evil", check=False)
        assert not Path("/etc/pm-breadth-evil").exists() and not Path("/pm-breadth-evil").exists()
        out = agent.docker("cp", f"{name}:/v/etc/hostname", str(tmp_path / "h"), check=False)
        host_hostname = Path("/etc/hostname").read_text() if Path("/etc/hostname").exists() else None
        assert out.returncode != 0 or (tmp_path / "h").read_text() != host_hostname
    finally:
        agent.docker("rm", "-f", name, check=False)
        agent.docker("volume", "rm", vol, check=False)


# --- docker import --------------------------------------------------------------------------------------


def _exported_rootfs(agent: Agent, tmp_path: Path) -> Path:
    agent.docker("create", "--name", "breadth-exp", B, "true")
    try:
        tar = tmp_path / "rootfs.tar"
        agent.docker("export", "-o", str(tar), "breadth-exp")
        return tar
    finally:
        agent.docker("rm", "-f", "breadth-exp", check=False)


def test_cli_import_with_changes_then_run(agent: Agent, tmp_path: Path) -> None:
    tar = _exported_rootfs(agent, tmp_path)
    out = agent.docker(
        "import", "-m", "from a test", "-c", 'CMD ["echo", "imported"]', "-c", "ENV WHO=me",
        str(tar), "breadth-imported:v1",
    )  # fmt: skip
    try:
        assert out.stdout.strip().startswith("sha256:")
        assert agent.docker("run", "--rm", "breadth-imported:v1").stdout == "imported\n"
        assert agent.docker("run", "--rm", "breadth-imported:v1", "sh", "-c", "echo $WHO").stdout == "me\n"
        history = agent.docker("history", "--no-trunc", "--format", "{{.Comment}}", "breadth-imported:v1")
        assert "from a test" in history.stdout
    finally:
        agent.docker("rmi", "breadth-imported:v1", check=False)


def test_dockerpy_import_xz(dc: docker.DockerClient, agent: Agent, tmp_path: Path) -> None:
    import lzma

    tar = _exported_rootfs(agent, tmp_path)
    xz = tmp_path / "rootfs.tar.xz"
    xz.write_bytes(lzma.compress(tar.read_bytes()))
    result = dc.api.import_image(src=str(xz), repository="breadth-xz", tag="1")
    try:
        assert "sha256:" in str(result)
        assert dc.containers.run("breadth-xz:1", ["cat", "/etc/hostname"], remove=True) is not None
    finally:
        dc.images.remove("breadth-xz:1", force=True)


@pytest.mark.skipif(
    bool(os.environ.get("PYMACHINE_COMPAT_DOCKER_HOST")),
    reason="the engine fetches the URL itself: a VM cannot reach this host's 127.0.0.1",
)
def test_dockerpy_import_from_url(dc: docker.DockerClient, agent: Agent, tmp_path: Path) -> None:
    import http.server
    import threading

    _exported_rootfs(agent, tmp_path)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rootfs.tar"
        dc.api.import_image_from_url(url, repository="breadth-url", tag="1")
        assert dc.containers.run("breadth-url:1", ["cat", "/etc/hostname"], remove=True) is not None
    finally:
        server.shutdown()
        dc.images.remove("breadth-url:1", force=True)


def test_import_of_a_hostile_tar_writes_nothing_outside(agent: Agent, tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("../../../../tmp/pm-import-escape", "/tmp/pm-import-abs"):
            info = tarfile.TarInfo(name)
            info.size = 4
            t.addfile(info, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        t.addfile(link)
        info = tarfile.TarInfo("lnk/pm-import-through-link")
        info.size = 4
        t.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    agent.docker("import", str(tmp_path / "evil.tar"), "breadth-evil:1", check=False)
    try:
        for name in ("pm-import-escape", "pm-import-abs", "pm-import-through-link"):
            assert not (Path("/tmp") / name).exists(), name
    finally:
        agent.docker("rmi", "breadth-evil:1", check=False)


# --- bind sources ---------------------------------------------------------------------------------------


def test_mount_of_a_missing_bind_source_is_a_400_at_create(agent: Agent, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    out = agent.docker(
        "create", "--name", "breadth-nobind", "--mount", f"type=bind,source={missing},target=/x", B, "true",
        check=False,
    )  # fmt: skip
    agent.docker("rm", "-f", "breadth-nobind", check=False)
    assert out.returncode != 0
    assert f"bind source path does not exist: {missing}" in out.stderr
    assert not missing.exists()


def test_v_of_a_missing_bind_source_makes_the_folder(agent: Agent, tmp_path: Path) -> None:
    missing = tmp_path / "made" / "by-v"
    out = agent.docker("run", "--rm", "-v", f"{missing}:/x", B, "sh", "-c", "echo hi > /x/f; cat /x/f")
    assert out.stdout == "hi\n" and (missing / "f").read_text() == "hi\n"


# --- attach ---------------------------------------------------------------------------------------------


def _ctrl(c: str) -> bytes:
    return bytes([ord(c) - ord("a") + 1])


@pytest.mark.parametrize(
    "params,keys",
    [({}, [_ctrl("p"), _ctrl("q")]), ({"detachKeys": "ctrl-x"}, [_ctrl("x")])],
    ids=["default-ctrl-p-ctrl-q", "detachKeys-ctrl-x"],
)
def test_attach_detach_keys_end_the_attach_not_the_container(dc: docker.DockerClient, params, keys) -> None:  # type: ignore[no-untyped-def]
    api = dc.api
    ct = api.create_container(B, "cat", detach=True, stdin_open=True, tty=True)
    try:
        api.start(ct)
        sock = api.attach_socket(ct, {"stdin": True, "stream": True, **params})._sock
        sock.sendall(b"typed\n")
        for key in keys:
            sock.sendall(key)
            time.sleep(0.3)

        def closed() -> bool:
            try:
                sock.sendall(b"make sure the socket is closed\n")
                sock.settimeout(0.5)
                return sock.recv(128) == b""
            except OSError:
                return True

        _wait(closed, 20, "the attach to end")
        assert api.inspect_container(ct)["State"]["Running"] is True
        # the container's stdin stayed open: a new attach still talks to cat
        again = api.attach_socket(ct, {"stdin": True, "stdout": True, "stream": True})._sock
        again.sendall(b"still here\n")
        again.settimeout(10)
        got = b""
        while b"still here" not in got:
            got += again.recv(4096)
        again.close()
    finally:
        api.remove_container(ct, force=True)


def test_attach_invalid_detach_keys_is_a_400(dc: docker.DockerClient) -> None:
    ct = dc.api.create_container(B, "cat", detach=True, stdin_open=True, tty=True)
    try:
        dc.api.start(ct)
        with pytest.raises(docker.errors.APIError) as err:
            dc.api.attach_socket(ct, {"stdin": True, "stream": True, "detachKeys": "ctrl-xx"})._sock.recv(1)
        assert err.value.status_code == 400
    finally:
        dc.api.remove_container(ct, force=True)


def test_attach_without_stream_returns_what_was_logged(dc: docker.DockerClient) -> None:
    ct = dc.api.create_container(B, ["sh", "-c", "echo hello; echo oops >&2"])
    try:
        dc.api.start(ct)
        dc.api.wait(ct, condition="not-running")
        for _ in range(5):  # the replay is at once, with the headers: the case that lost it
            assert dc.api.attach(ct, stream=False, logs=True) == b"hello\noops\n"
        out, err = dc.api.attach(ct, stream=False, logs=True, demux=True)
        assert (out, err) == (b"hello\n", b"oops\n")
    finally:
        dc.api.remove_container(ct, force=True)


# --- build options --------------------------------------------------------------------------------------


def test_build_dockerfile_outside_context_stderr_and_extra_hosts(
    dc: docker.DockerClient, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("f\n")
    (tmp_path / "Dockerfile.outside").write_text(
        f"FROM {B}\nCOPY f.txt /f.txt\nRUN echo to-stdout; echo to-stderr >&2\n"
        "RUN grep myhost /etc/hosts > /hosts-line\n"
    )
    image, logs = dc.images.build(
        path=str(ctx),
        dockerfile="../Dockerfile.outside",
        tag="breadth-outside",
        extra_hosts={"myhost": "10.9.8.7"},
        rm=True,  # docker-py keeps RUN containers by default
    )
    try:
        text = "".join(x.get("stream", "") for x in logs)
        assert "to-stdout" in text and "to-stderr" in text
        out = dc.containers.run("breadth-outside", ["cat", "/f.txt", "/hosts-line"], remove=True)
        assert out == b"f\n10.9.8.7\tmyhost\n"
    finally:
        dc.images.remove("breadth-outside", force=True)


def test_build_cache_from_a_loaded_image(agent: Agent, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {B}\nENV STAGE=one\nCOPY app.txt /app.txt\nRUN date +%s%N > /built-at\n"
        'CMD ["cat", "/built-at"]\n'
    )
    built = agent.docker("build", "-q", "-t", "breadth-cachefrom:1", str(ctx)).stdout.strip()
    archive = tmp_path / "img.tar"
    agent.docker("save", "-o", str(archive), "breadth-cachefrom:1")
    agent.docker("rmi", "breadth-cachefrom:1")  # its intermediate images go too: no local cache is left
    agent.docker("load", "-i", str(archive))
    try:
        out = agent.docker(
            "build", "--cache-from", "breadth-cachefrom:1", "-t", "breadth-cachefrom:2", str(ctx)
        )
        assert out.stdout.count("Using cache") == 4, out.stdout  # ENV, COPY, RUN, CMD
        again = agent.docker("inspect", "-f", "{{.Id}}", "breadth-cachefrom:2").stdout.strip()
        assert again == built
        # a changed file is not a hit: the COPY history names the content, not the file name
        (ctx / "app.txt").write_text("changed\n")
        out = agent.docker(
            "build", "--cache-from", "breadth-cachefrom:1", "-t", "breadth-cachefrom:3", str(ctx)
        )
        assert out.stdout.count("Using cache") == 1, out.stdout  # ENV only
    finally:
        agent.docker(
            "rmi", "-f", "breadth-cachefrom:1", "breadth-cachefrom:2", "breadth-cachefrom:3", check=False
        )


def test_rmi_removes_the_builds_unnamed_parents_unless_noprune(
    dc: docker.DockerClient, tmp_path: Path
) -> None:
    before = {i.id for i in dc.images.list(all=True)}
    (tmp_path / "Dockerfile").write_text(f"FROM {B}\nENV A=prune\nRUN echo x > /x\nENV B=2\n")
    dc.images.build(path=str(tmp_path), tag="breadth-prune:1", nocache=True, rm=True)
    deleted = [r["Deleted"] for r in dc.api.remove_image("breadth-prune:1") if "Deleted" in r]
    assert len(deleted) == 3  # the image and the two steps below it (not busybox: it has a name)
    assert {i.id for i in dc.images.list(all=True)} == before
    (tmp_path / "Dockerfile").write_text(f"FROM {B}\nENV A=noprune\nRUN echo y > /y\n")
    dc.images.build(path=str(tmp_path), tag="breadth-noprune:1", nocache=True, rm=True)
    kept = dc.api.remove_image("breadth-noprune:1", noprune=True)
    assert len([r for r in kept if "Deleted" in r]) == 1
    assert len({i.id for i in dc.images.list(all=True)} - before) == 1  # the step below it stays
    dc.images.prune(filters={"dangling": True})


# --- exec -----------------------------------------------------------------------------------------------


def test_exec_variants_through_docker_py(dc: docker.DockerClient) -> None:
    c = dc.containers.run(B, ["sleep", "600"], detach=True)
    try:
        assert c.exec_run("id -u") == (0, b"0\n")
        assert c.exec_run("id -u", user="1000") == (0, b"1000\n")
        assert c.exec_run("pwd", workdir="/tmp") == (0, b"/tmp\n")
        assert c.exec_run("sh -c 'exit 3'").exit_code == 3
        for _ in range(10):  # a quick command's output arrives with the headers: none may be lost
            assert c.exec_run("echo hello", tty=True) == (0, b"hello\r\n")
        assert c.exec_run("sh -c 'echo out; echo err >&2'", demux=True).output == (b"out\n", b"err\n")
        detached = c.exec_run("sleep 3", detach=True)
        assert detached.exit_code is None  # docker-py inspects it at once: still running
        exec_id = dc.api.exec_create(c.id, "sh -c 'exit 42'")["Id"]
        sock = dc.api.exec_start(exec_id, socket=True)._sock
        sock.settimeout(120)  # an exec under TCG on a loaded host takes seconds
        while sock.recv(4096):
            pass
        assert _wait(lambda: dc.api.exec_inspect(exec_id)["ExitCode"] == 42, 10, "exit code 42")
    finally:
        c.remove(force=True)


# --- networks: legacy links -------------------------------------------------------------------------------


def test_legacy_link_gives_env_and_hosts_and_can_be_removed(agent: Agent, dc: docker.DockerClient) -> None:
    agent.docker("run", "-d", "--name", "breadth-srv", "--expose", "80", "-e", "SECRET=s1", B, "sleep", "600")
    try:
        ip = agent.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "breadth-srv").stdout.strip()
        out = agent.docker(
            "run", "--rm", "--name", "breadth-cli", "--link", "breadth-srv:db", B,
            "sh", "-c",
            "env | grep ^DB_ | sort; grep -w db /etc/hosts; ping -c1 -W2 breadth-srv >/dev/null && echo ok",
        ).stdout  # fmt: skip
        for line in (
            "DB_NAME=/breadth-cli/db",
            f"DB_PORT=tcp://{ip}:80",
            f"DB_PORT_80_TCP=tcp://{ip}:80",
            f"DB_PORT_80_TCP_ADDR={ip}",
            "DB_PORT_80_TCP_PORT=80",
            "DB_PORT_80_TCP_PROTO=tcp",
            "DB_ENV_SECRET=s1",
        ):
            assert line in out.splitlines(), (line, out)
        assert f"{ip}\tdb" in out and out.rstrip().endswith("ok")
        assert "DB_ENV_PATH" not in out
        # docker-py's links={name: alias}; the parent forgets it with DELETE /containers/PARENT/ALIAS?link=1
        c = dc.containers.run(
            B, "sleep 600", detach=True, name="breadth-parent", links={"breadth-srv": "srv2"}
        )
        try:
            assert c.attrs["HostConfig"]["Links"] == ["/breadth-srv:/breadth-parent/srv2"]
            dc.api.remove_container("breadth-parent/srv2", link=True)
            c.reload()
            assert not c.attrs["HostConfig"]["Links"]
        finally:
            c.remove(force=True)
    finally:
        agent.docker("rm", "-f", "breadth-srv", check=False)


def test_link_errors_as_dockerd(agent: Agent) -> None:
    missing = agent.docker("create", "--pull", "never", "--link", "breadth-nosuch:x", B, "true", check=False)
    # a 400: a 404 would make the CLI think the image is missing (and pull it)
    assert missing.returncode != 0 and "could not get container for breadth-nosuch" in missing.stderr
    agent.docker("create", "--name", "breadth-stopped", B, "true")
    try:
        out = agent.docker("run", "--rm", "--link", "breadth-stopped:s", B, "true", check=False)
        assert out.returncode != 0 and "Cannot link to a non running container" in out.stderr
        host = agent.docker(
            "create", "--network", "host", "--link", "breadth-stopped:s", B, "true", check=False
        )
        assert host.returncode != 0 and "can't be used with links" in host.stderr
    finally:
        agent.docker("rm", "-f", "breadth-stopped", check=False)


def test_link_on_a_user_network_is_a_name_for_the_linking_container_only(agent: Agent) -> None:
    agent.docker("network", "create", "breadth-un")
    try:
        agent.docker("run", "-d", "--name", "breadth-u1", "--network", "breadth-un", B, "sleep", "600")
        out = agent.docker(
            "run", "--rm", "--network", "breadth-un", "--link", "breadth-u1:aliasu", B,
            "ping", "-c1", "-W2", "aliasu",
        )  # fmt: skip
        assert "1 packets received" in out.stdout
        u2 = ["--name", "breadth-u2", "--network", "breadth-un", "--link", "breadth-u1:aliasu"]
        agent.docker("create", *u2, B)
        links = agent.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "breadth-u2").stdout
        assert json.loads(links)["breadth-un"]["Links"] == ["breadth-u1:aliasu"]
        other = agent.docker(
            "run", "--rm", "--network", "breadth-un", B, "ping", "-c1", "-W2", "aliasu", check=False
        )
        assert other.returncode != 0  # only the container that made the link knows the name
    finally:
        agent.docker("rm", "-f", "breadth-u1", "breadth-u2", check=False)
        agent.docker("network", "rm", "breadth-un", check=False)


def test_overlapping_subnet_is_a_409_naming_the_network(dc: docker.DockerClient) -> None:
    from docker.types import IPAMConfig, IPAMPool

    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet="172.31.240.0/24")])
    first = dc.networks.create("breadth-first", ipam=ipam, options={"foo": "bar"})
    try:
        assert first.attrs["Options"] == {"foo": "bar"}
        with pytest.raises(docker.errors.APIError) as err:
            dc.networks.create("breadth-second", ipam=ipam)
        assert err.value.status_code == 409
        assert "172.31.240.0/24 of network breadth-first" in str(err.value.explanation)
    finally:
        first.remove()


# --- networks: IPv6 ---------------------------------------------------------------------------------------


def test_ipv6_network_gives_containers_v6_addresses_they_talk_over(
    agent: Agent, dc: docker.DockerClient
) -> None:
    bridge = "pmbreadthv6"
    agent.docker(
        "network", "create", "--ipv6", "--subnet", "fd00:b7ea::/64",
        "-o", f"com.docker.network.bridge.name={bridge}", "breadth-v6",
    )  # fmt: skip
    try:
        sysctl = Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6")
        if sysctl.exists():  # the engine runs on this host (not through PYMACHINE_COMPAT_DOCKER_HOST)
            assert sysctl.read_text().strip() == "1"  # no guest address, link-local included, on the bridge
        info = dc.networks.get("breadth-v6").attrs
        assert info["EnableIPv6"] is True
        assert {c["Subnet"] for c in info["IPAM"]["Config"]} >= {"fd00:b7ea::/64"}
        agent.docker(
            "run", "-d", "--name", "breadth-v6a", "--network", "breadth-v6", "--ip6", "fd00:b7ea::10",
            B, "sleep", "600",
        )  # fmt: skip
        net = json.loads(
            agent.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "breadth-v6a").stdout
        )
        ep = net["breadth-v6"]
        assert ep["GlobalIPv6Address"] == "fd00:b7ea::10" and ep["GlobalIPv6PrefixLen"] == 64
        assert ep["IPAMConfig"] == {"IPv6Address": "fd00:b7ea::10"}
        out = agent.docker(
            "run", "--rm", "--network", "breadth-v6", B, "ping", "-6", "-c1", "-W3", "fd00:b7ea::10"
        )
        assert "1 packets received" in out.stdout
        # the guest takes no IPv6 address on the network: nothing of it answers there (the guard is IPv4)
        gw = agent.docker(
            "run",
            "--rm",
            "--network",
            "breadth-v6",
            B,
            "ping",
            "-6",
            "-c1",
            "-W2",
            "fd00:b7ea::1",
            check=False,
        )
        assert gw.returncode != 0
    finally:
        agent.docker("rm", "-f", "breadth-v6a", check=False)
        agent.docker("network", "rm", "breadth-v6", check=False)


def test_ipv6_pool_without_enable_ipv6_echoes_the_requested_address(dc: docker.DockerClient) -> None:
    from docker.types import IPAMConfig, IPAMPool

    net = dc.networks.create(
        "breadth-v6pool", ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="2001:389::/64")])
    )
    try:
        c = dc.api.create_container(
            B,
            "sleep 60",
            host_config=dc.api.create_host_config(network_mode="breadth-v6pool"),
            networking_config=dc.api.create_networking_config(
                {"breadth-v6pool": dc.api.create_endpoint_config(ipv6_address="2001:389::f00d")}
            ),
        )
        try:
            dc.api.start(c)
            settings = dc.api.inspect_container(c)["NetworkSettings"]["Networks"]["breadth-v6pool"]
            assert settings["IPAMConfig"]["IPv6Address"] == "2001:389::f00d"
        finally:
            dc.api.remove_container(c, force=True)
        overlap = pytest.raises(docker.errors.APIError)
        with overlap as err:
            dc.networks.create(
                "breadth-v6clash", ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="2001:389::/80")])
            )
        assert err.value.status_code == 409 and "breadth-v6pool" in str(err.value.explanation)
    finally:
        net.remove()
