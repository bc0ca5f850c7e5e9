"""The real `docker` CLI (28.x, client only) against our engine: the scenario list of issue 6.

Each test is one scenario; they share one agent (conftest.py) and clean up their own containers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from support.agent import Agent
from support.pty_session import pty_session

B = "pymachine/busybox"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _pty_run(agent: Agent, args: list[str]) -> tuple[int, bytes]:
    """Run the docker CLI on a pseudo-terminal (what `-it` needs) and return (exit code, output)."""
    return pty_session(["docker", *args], agent.env(), 24, 80, lambda _fd, _out: None)


def _wait_for(pred, timeout: float = 20, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _engine_now(agent: Agent) -> float:
    """The engine's clock (`SystemTime` of /info) as unix seconds."""
    from datetime import datetime

    text = agent.docker("info", "--format", "{{json .SystemTime}}").stdout.strip().strip('"')
    return datetime.fromisoformat(text.rstrip("Z")[:26] + "+00:00").timestamp()


# -- run ---------------------------------------------------------------------------------------------


def test_run_rm_foreground_output_and_exit_code(agent: Agent) -> None:
    r = agent.docker("run", "--rm", B, "echo", "hi")
    assert r.stdout == "hi\n"
    r = agent.docker("run", "--rm", B, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert r.returncode == 7 and r.stdout == "out\n" and "err" in r.stderr
    # --rm really removed them
    assert agent.docker("ps", "-aq").stdout.strip() == ""


def test_run_detached_then_logs_and_stop(agent: Agent) -> None:
    cid = agent.docker("run", "-d", "--name", "det", B, "sh", "-c", "echo started; sleep 300").stdout.strip()
    assert len(cid) == 64
    _wait_for(lambda: "started" in agent.docker("logs", "det").stdout, what="log line")
    assert agent.docker("inspect", "--format", "{{.State.Running}}", "det").stdout.strip() == "true"
    agent.docker("stop", "-t", "1", "det")
    assert agent.docker("inspect", "--format", "{{.State.Status}}", "det").stdout.strip() == "exited"
    agent.docker("rm", "det")


def test_run_interactive_stdin(agent: Agent) -> None:
    r = agent.docker("run", "--rm", "-i", B, "sh", "-c", "cat; echo done", input=b"piped line\n")
    assert r.stdout == "piped line\ndone\n"


def test_run_tty_through_a_pty(agent: Agent) -> None:
    code, out = _pty_run(agent, ["run", "--rm", "-it", B, "sh", "-c", "test -t 0 && echo is-a-tty; exit 3"])
    assert code == 3
    assert b"is-a-tty" in out


def test_run_env_workdir_user_entrypoint(agent: Agent) -> None:
    r = agent.docker(
        "run",
        "--rm",
        "-e",
        "A=b",
        "-w",
        "/tmp",
        "-u",
        "65534:65534",
        B,
        "sh",
        "-c",
        'echo "$A $(pwd) $(id -u):$(id -g)"',
    )
    assert r.stdout == "b /tmp 65534:65534\n"
    r = agent.docker("run", "--rm", "--entrypoint", "echo", B, "from", "entrypoint")
    assert r.stdout == "from entrypoint\n"


def test_run_name_hostname(agent: Agent) -> None:
    r = agent.docker("run", "--rm", "--name", "named1", "--hostname", "myhost", B, "hostname")
    assert r.stdout == "myhost\n"


def test_run_publish_port(agent: Agent) -> None:
    port = _free_port()
    agent.docker(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        f"127.0.0.1:{port}:80",
        B,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-web > /www/index.html && exec httpd -f -p 80 -h /www",
    )
    try:

        def fetch() -> str | None:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                return None

        assert _wait_for(fetch, what="published port") == "hello-web\n"
        assert agent.docker("port", "web").stdout.strip() == f"80/tcp -> 127.0.0.1:{port}"
        ps = agent.docker("ps", "--format", "{{.Ports}}", "--filter", "name=web").stdout.strip()
        assert ps == f"127.0.0.1:{port}->80/tcp"
    finally:
        agent.docker("rm", "-f", "web")


def test_run_bind_mount_and_named_volume(agent: Agent, tmp_path: Path) -> None:
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    r = agent.docker(
        "run", "--rm", "-v", f"{host}:/data", B, "sh", "-c", "cat /data/in.txt; echo back > /data/out"
    )
    assert r.stdout == "from host\n" and (host / "out").read_text() == "back\n"
    agent.docker("volume", "create", "cvol")
    agent.docker("run", "--rm", "-v", "cvol:/v", B, "sh", "-c", "echo persisted > /v/f")
    assert agent.docker("run", "--rm", "-v", "cvol:/v:ro", B, "cat", "/v/f").stdout == "persisted\n"
    r = agent.docker("run", "--rm", "-v", "cvol:/v:ro", B, "sh", "-c", "echo x > /v/g", check=False)
    assert r.returncode != 0
    agent.docker("volume", "rm", "cvol")


def test_run_user_network_and_dns(agent: Agent) -> None:
    agent.docker("network", "create", "cnet")
    try:
        agent.docker("run", "-d", "--name", "srv", "--network", "cnet", B, "sleep", "300")
        r = agent.docker("run", "--rm", "--network", "cnet", B, "ping", "-c", "1", "-W", "5", "srv")
        assert "1 packets received" in r.stdout
    finally:
        agent.docker("rm", "-f", "srv", check=False)
        agent.docker("network", "rm", "cnet")


def test_run_resource_limits_are_recorded(agent: Agent) -> None:
    agent.docker(
        "run",
        "-d",
        "--name",
        "lim",
        "--memory",
        "64m",
        "--cpus",
        "1.5",
        "--pids-limit",
        "100",
        B,
        "sleep",
        "300",
    )
    try:
        fmt = "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"
        assert agent.docker("inspect", "--format", fmt, "lim").stdout.strip() == "67108864 1500000000 100"
    finally:
        agent.docker("rm", "-f", "lim")


def test_run_restart_policy_restarts(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "rs", "--restart", "on-failure:2", B, "sh", "-c", "exit 1")
    try:
        count = _wait_for(
            lambda: int(agent.docker("inspect", "--format", "{{.RestartCount}}", "rs").stdout) >= 1 or None,
            what="a restart",
        )
        assert count
        fmt = "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        assert agent.docker("inspect", "--format", fmt, "rs").stdout.strip() == "on-failure:2"
    finally:
        agent.docker("rm", "-f", "rs")


# -- ps / logs / exec / lifecycle ----------------------------------------------------------------------


def test_ps_all_filter_format(agent: Agent) -> None:
    agent.docker("run", "--name", "ex0", B, "true")
    agent.docker("run", "--name", "ex3", B, "sh", "-c", "exit 3", check=False)
    agent.docker("run", "-d", "--name", "up1", "--label", "tier=web", B, "sleep", "300")
    try:
        running = agent.docker("ps", "--format", "{{.Names}}").stdout.split()
        assert "up1" in running and "ex0" not in running
        everything = agent.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert {"ex0", "ex3", "up1"} <= set(everything)
        exited = agent.docker(
            "ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"
        ).stdout.split()
        assert {"ex0", "ex3"} <= set(exited) and "up1" not in exited
        three = agent.docker("ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}").stdout.split()
        assert three == ["ex3"]
        labelled = agent.docker(
            "ps", "--filter", "label=tier=web", "--format", "{{.Names}} {{.Status}}"
        ).stdout
        assert labelled.startswith("up1 Up ")
    finally:
        agent.docker("rm", "-f", "ex0", "ex3", "up1")


def test_logs_follow_and_tail(agent: Agent) -> None:
    agent.docker(
        "run", "-d", "--name", "lg", B, "sh", "-c", "for i in 1 2 3 4 5; do echo l$i; done; sleep 2; echo end"
    )
    try:
        r = agent.docker("logs", "-f", "lg", timeout=30)  # returns when the container exits
        assert r.stdout.split() == ["l1", "l2", "l3", "l4", "l5", "end"]
        assert agent.docker("logs", "--tail", "2", "lg").stdout.split() == ["l5", "end"]
        stamped = agent.docker("logs", "-t", "--tail", "1", "lg").stdout
        assert stamped.split(" ", 1)[0].endswith("Z") and stamped.endswith(" end\n")
    finally:
        agent.docker("rm", "-f", "lg")


def test_exec_plain_and_tty(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "ex", B, "sleep", "300")
    try:
        r = agent.docker(
            "exec", "-e", "X=1", "-w", "/tmp", "ex", "sh", "-c", 'echo "$X $(pwd)"; exit 5', check=False
        )
        assert r.returncode == 5 and r.stdout == "1 /tmp\n"
        r = agent.docker("exec", "-i", "ex", "cat", input=b"through exec stdin\n")
        assert r.stdout == "through exec stdin\n"
        code, out = _pty_run(agent, ["exec", "-it", "ex", "sh", "-c", "test -t 1 && echo exec-tty"])
        assert code == 0 and b"exec-tty" in out
        agent.docker("exec", "-d", "ex", "sh", "-c", "echo detached > /tmp/d")
        _wait_for(
            lambda: agent.docker("exec", "ex", "cat", "/tmp/d", check=False).stdout == "detached\n",
            what="detached exec",
        )
    finally:
        agent.docker("rm", "-f", "ex")


def test_stop_kill_rm_force(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "k1", B, "sleep", "300")
    agent.docker("kill", "k1")
    assert agent.docker("inspect", "--format", "{{.State.ExitCode}}", "k1").stdout.strip() == "137"
    r = agent.docker("kill", "k1", check=False)
    assert r.returncode != 0 and "is not running" in r.stderr
    agent.docker("start", "k1")
    r = agent.docker("rm", "k1", check=False)
    assert r.returncode != 0 and "stop the container before removing or force remove" in r.stderr
    agent.docker("rm", "-f", "k1")
    r = agent.docker("rm", "k1", check=False)
    assert "No such container: k1" in r.stderr


def test_inspect_format_and_missing_object(agent: Agent) -> None:
    agent.docker("create", "--name", "insp", "-e", "K=V", B, "true")
    try:
        fmt = (
            "{{.Name}} {{.State.Status}} {{.Config.Image}} {{index .Config.Env 1}} "
            "{{.HostConfig.LogConfig.Type}}"
        )
        assert agent.docker("inspect", "--format", fmt, "insp").stdout.strip() == (
            "/insp created pymachine/busybox K=V json-file"
        )
        data = json.loads(agent.docker("inspect", "insp").stdout)
        assert data[0]["Id"].startswith(agent.docker("ps", "-aq", "--filter", "name=insp").stdout.strip())
        r = agent.docker("inspect", "nothere", check=False)
        assert r.returncode == 1 and "No such object: nothere" in r.stderr
    finally:
        agent.docker("rm", "insp")


def test_cp_both_ways(agent: Agent, tmp_path: Path) -> None:
    agent.docker(
        "run", "-d", "--name", "cp1", B, "sh", "-c", "mkdir -p /srv/d && echo inside > /srv/d/f; sleep 300"
    )
    try:
        (tmp_path / "up.txt").write_text("from host\n")
        agent.docker("cp", str(tmp_path / "up.txt"), "cp1:/tmp/up.txt")
        assert agent.docker("exec", "cp1", "cat", "/tmp/up.txt").stdout == "from host\n"
        _wait_for(lambda: agent.docker("exec", "cp1", "test", "-f", "/srv/d/f", check=False).returncode == 0)
        agent.docker("cp", "cp1:/srv/d", str(tmp_path / "down"))
        assert (tmp_path / "down" / "f").read_text() == "inside\n"
        agent.docker("stop", "-t", "0", "cp1")
        agent.docker("cp", "cp1:/tmp/up.txt", str(tmp_path / "again.txt"))  # from a stopped container
        assert (tmp_path / "again.txt").read_text() == "from host\n"
    finally:
        agent.docker("rm", "-f", "cp1")


def test_stats_no_stream_and_top(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "st", B, "sleep", "300")
    try:
        r = agent.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "st")
        name, pids = r.stdout.split()
        assert name == "st" and pids.isdigit()
        top = agent.docker("top", "st").stdout
        assert "sleep 300" in top and "PID" in top.splitlines()[0]
    finally:
        agent.docker("rm", "-f", "st")


def test_rename_wait_and_port(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "old", B, "sh", "-c", "sleep 1; exit 4")
    agent.docker("rename", "old", "new")
    assert agent.docker("wait", "new").stdout.strip() == "4"
    r = agent.docker("inspect", "old", check=False)
    assert r.returncode != 0
    agent.docker("rm", "new")


# -- images ------------------------------------------------------------------------------------------


def test_images_tag_history_save_load_rmi(agent: Agent, tmp_path: Path) -> None:
    listing = agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert f"{B}:latest" in listing
    agent.docker("tag", B, "mytag/box:v1")
    assert "mytag/box:v1" in agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    hist = agent.docker("history", "mytag/box:v1").stdout
    assert "IMAGE" in hist.splitlines()[0] and len(hist.splitlines()) >= 2
    out = tmp_path / "saved.tar"
    agent.docker("save", "-o", str(out), "mytag/box:v1")
    assert out.stat().st_size > 100_000
    r = agent.docker("rmi", "mytag/box:v1")
    assert "Untagged: mytag/box:v1" in r.stdout
    r = agent.docker("load", "-i", str(out))
    assert "mytag/box:v1" in r.stdout
    agent.docker("rmi", "mytag/box:v1")
    r = agent.docker("rmi", "no/such:image", check=False)
    assert r.returncode != 0 and "No such image" in r.stderr


# -- networks / volumes / system -------------------------------------------------------------------


def test_network_create_connect_ls_rm(agent: Agent) -> None:
    agent.docker("network", "create", "n1")
    try:
        assert "n1" in agent.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        agent.docker("run", "-d", "--name", "nc1", B, "sleep", "300")
        agent.docker("network", "connect", "n1", "nc1")
        nets = agent.docker(
            "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "nc1"
        ).stdout.split()
        assert "n1" in nets
        r = agent.docker("exec", "nc1", "ip", "-o", "addr").stdout
        assert r.count("inet ") >= 3  # lo + bridge + n1
    finally:
        agent.docker("rm", "-f", "nc1", check=False)
    agent.docker("network", "rm", "n1")
    assert "n1" not in agent.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_volume_create_ls_rm(agent: Agent) -> None:
    agent.docker("volume", "create", "--label", "k=v", "v1")
    assert "v1" in agent.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert agent.docker("volume", "inspect", "--format", "{{.Labels}}", "v1").stdout.strip() == "map[k:v]"
    agent.docker("volume", "rm", "v1")
    assert "v1" not in agent.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()


def test_system_df_and_prune(agent: Agent) -> None:
    agent.docker("run", "--name", "pr1", B, "true")
    df = agent.docker("system", "df").stdout
    assert df.splitlines()[0].startswith("TYPE") and "Images" in df and "Containers" in df
    r = agent.docker("container", "prune", "-f")
    assert "Total reclaimed space" in r.stdout
    assert "pr1" not in agent.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    agent.docker("system", "prune", "-f")


def test_events_stream(agent: Agent) -> None:
    # the engine's clock, not ours: a VM's clock may be a second or two off the host's
    since = str(int(_engine_now(agent)) - 1)
    agent.docker("run", "--rm", "--name", "evt", B, "true")
    until = str(int(_engine_now(agent)) + 1)
    r = agent.docker(
        "events", "--since", since, "--until", until, "--filter", "container=evt", "--format", "{{.Action}}"
    )
    actions = r.stdout.split()
    for expected in ("create", "start", "die", "destroy"):
        assert expected in actions, actions
    # a live subscriber sees what happens after it connects
    proc = subprocess.Popen(
        [
            "docker",
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=agent.env(),
    )
    try:
        time.sleep(1.0)
        agent.docker("run", "--rm", "--name", "evt2", B, "true")
        seen = ""
        deadline = time.monotonic() + 20
        while "destroy evt2" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()  # type: ignore[union-attr]
        assert "start evt2" in seen and "destroy evt2" in seen
    finally:
        proc.terminate()
        proc.wait(5)


# -- more of the CLI: legacy API path, attach, build, diff/commit, update, pause ----------------------------


def test_legacy_api_version_run_uses_events(agent: Agent) -> None:
    env_run = subprocess.run(
        ["docker", "run", "--rm", B, "sh", "-c", "echo legacy; exit 3"],
        env={**agent.env(), "DOCKER_API_VERSION": "1.25"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_run.returncode == 3 and env_run.stdout == "legacy\n"


def test_attach_and_start_attached(agent: Agent) -> None:
    # prints for a few seconds, so a slow client (a loaded VM) still attaches while it runs
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo attached-out; sleep 0.3; done"
    agent.docker("run", "-d", "--name", "att", B, "sh", "-c", script)
    try:
        assert "attached-out\n" in agent.docker("attach", "att").stdout
        assert agent.docker("start", "-a", "att").stdout == "attached-out\n" * 10
    finally:
        agent.docker("rm", "-f", "att")


def test_build_legacy_builder(agent: Agent, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM pymachine/busybox\nRUN echo built > /built.txt\nENV X=1\n"
        'CMD ["sh", "-c", "cat /built.txt; echo $X"]\n'
    )
    r = agent.docker("build", "-t", "clibuilt:1", str(tmp_path), timeout=300)
    assert "Successfully tagged clibuilt:1" in r.stdout
    assert agent.docker("run", "--rm", "clibuilt:1").stdout == "built\n1\n"
    agent.docker("rmi", "clibuilt:1")


def test_diff_commit_update_pause(agent: Agent) -> None:
    agent.docker("run", "-d", "--name", "dcu", B, "sh", "-c", "echo x > /made.txt; rm /etc/group; sleep 300")
    try:
        # the shell makes /made.txt, then removes /etc/group: wait for the second (seen racing under load)
        _wait_for(lambda: "D /etc/group" in agent.docker("diff", "dcu").stdout, what="diff")
        changes = agent.docker("diff", "dcu").stdout.splitlines()
        assert "A /made.txt" in changes and "D /etc/group" in changes
        assert not any(line.endswith(("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")) for line in changes)
        agent.docker("commit", "dcu", "committed:1")
        assert agent.docker("run", "--rm", "committed:1", "cat", "/made.txt").stdout == "x\n"
        agent.docker("update", "--memory", "128m", "--memory-swap", "256m", "--restart", "always", "dcu")
        fmt = "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}"
        assert agent.docker("inspect", "--format", fmt, "dcu").stdout.strip() == "134217728 always"
        agent.docker("pause", "dcu")
        assert agent.docker("inspect", "--format", "{{.State.Status}}", "dcu").stdout.strip() == "paused"
        assert "(Paused)" in agent.docker("ps", "--filter", "name=dcu", "--format", "{{.Status}}").stdout
        agent.docker("unpause", "dcu")
        assert agent.docker("inspect", "--format", "{{.State.Status}}", "dcu").stdout.strip() == "running"
    finally:
        agent.docker("rm", "-f", "dcu")
        agent.docker("rmi", "committed:1", check=False)


def test_push_pull_login_with_a_local_registry(agent: Agent, tmp_path: Path) -> None:
    from support.registry import local_registry

    with local_registry(tmp_path / "reg", users={"alice": "secret"}) as reg:
        ref = f"{reg.host}/team/box:v1"
        agent.docker("tag", B, ref)
        r = agent.docker("push", ref, check=False)
        assert r.returncode != 0  # not logged in yet
        r = agent.docker("login", reg.host, "-u", "alice", "--password-stdin", input=b"wrong\n", check=False)
        assert r.returncode != 0 and "unauthorized" in (r.stderr + r.stdout).lower()
        agent.docker("login", reg.host, "-u", "alice", "--password-stdin", input=b"secret\n")
        r = agent.docker("push", ref)
        assert "digest: sha256:" in r.stdout
        agent.docker("rmi", ref)
        r = agent.docker("pull", ref)
        assert f"{ref}" in r.stdout and "Digest: sha256:" in r.stdout
        out = agent.docker("run", "--rm", ref, "echo", "pulled").stdout
        assert out == "pulled\n"
        agent.docker("rmi", ref)
        r = agent.docker("pull", f"{reg.host}/team/nothere:v1", check=False)
        assert r.returncode != 0
        # `docker run` of a missing image pulls it (create 404 → images/create → create)
        agent.docker("tag", B, ref)
        agent.docker("push", ref)
        agent.docker("rmi", ref)
        r = agent.docker("run", "--rm", ref, "echo", "auto-pulled")
        assert r.stdout == "auto-pulled\n" and "Unable to find image" in r.stderr
        agent.docker("rmi", ref)


def test_export_and_sizes(agent: Agent, tmp_path: Path) -> None:
    agent.docker("run", "-d", "--name", "exp", B, "sh", "-c", "head -c 300000 /dev/zero > /big; sleep 300")
    try:
        _wait_for(lambda: "/big" in agent.docker("diff", "exp").stdout, what="the file")
        size = agent.docker("ps", "-s", "--filter", "name=exp", "--format", "{{.Size}}").stdout.strip()
        assert size.startswith("300kB (virtual "), size
        out = tmp_path / "exp.tar"
        agent.docker("export", "-o", str(out), "exp")
        import tarfile

        with tarfile.open(out) as tar:
            names = {n.lstrip("./") for n in tar.getnames()}
        assert {"big", "bin/sh", "etc/passwd"} <= names and not any(n.startswith("proc/") for n in names)
    finally:
        agent.docker("rm", "-f", "exp")


def test_network_modes_host_none_container(agent: Agent) -> None:
    guest_name = agent.docker("run", "--rm", "--network", "host", B, "hostname").stdout.strip()
    assert guest_name == agent.docker("info", "--format", "{{.Name}}").stdout.strip()
    lo_only = agent.docker("run", "--rm", "--network", "none", B, "ip", "-o", "-4", "addr").stdout
    assert "127.0.0.1/8" in lo_only and len(lo_only.strip().splitlines()) == 1
    agent.docker("run", "-d", "--name", "netbase", B, "sleep", "300")
    try:
        ip = agent.docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", "netbase").stdout.strip()
        shared = agent.docker(
            "run", "--rm", "--network", "container:netbase", B, "ip", "-o", "-4", "addr"
        ).stdout
        assert f"inet {ip}/" in shared
    finally:
        agent.docker("rm", "-f", "netbase")
