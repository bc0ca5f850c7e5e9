"""Issue 13, the guest agent's side of host folders, on the real agent on this host.

An agent given a `shares` list in its settings (what a machine's agent.json says) treats bind sources as host
paths: each must lie in a share, whose folder must be mounted (here: a bind mount of a temp folder onto
itself stands in for virtiofs). Outside every share the create fails with the command that shares the path;
an unmounted share is an error, never an empty folder; `-v` makes a missing source, `--mount` does not; a
read-only share makes every bind of it read-only. Without a `shares` key everything is as before. Then the
change-event half: the agent announces the watched host paths to the host agent's stream and turns
`POST /pymachine/v1/fs-events` into inotify events inside the container.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, UnixHTTPConnection, running_agent
from support.inotify import IN_ATTRIB, IN_OPEN, events, inotify_watch_binary
from support.static_c import unix_http_binary

from pymachine_agent import protocol

MACHINE = "devbox"


@contextlib.contextmanager
def _mounted(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("shares-agent")
    rw, ro, gone, flaky = base / "home", base / "readonly", base / "unmounted", base / "flaky"
    gone.mkdir()
    flaky.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(flaky)], check=True)  # the restart test unmounts it
    with _mounted(rw), _mounted(ro):
        settings = base / "agent.json"
        settings.write_text(
            json.dumps(
                {
                    "machine": MACHINE,
                    "shares": [
                        {"path": str(rw), "readonly": False, "transport": "virtiofs"},
                        {"path": str(ro), "readonly": True, "transport": "virtiofs"},
                        {"path": str(gone), "readonly": False, "transport": "virtiofs"},
                        {"path": str(flaky), "readonly": False, "transport": "sshfs"},
                    ],
                }
            )
        )
        with running_agent(base / "a", ["--settings", str(settings), "--no-network"]) as agent:
            agent.load_busybox()
            yield {"agent": agent, "rw": rw, "ro": ro, "gone": gone, "flaky": flaky, "base": base}
    subprocess.run(["umount", "-l", str(flaky)], check=False)


def _create(agent: Agent, host_config: dict) -> tuple[int, dict]:
    status, _, body = agent.request(
        "POST", "/containers/create", {"Image": agent.busybox, "Cmd": ["true"], "HostConfig": host_config}
    )
    return status, json.loads(body or b"{}")


def test_a_path_outside_every_share_is_refused_with_the_command_that_shares_it(env: dict) -> None:
    agent: Agent = env["agent"]
    outside = env["base"] / "elsewhere" / "x"
    run = agent.docker("run", "--rm", "-v", f"{outside}:/app", agent.busybox, "true", check=False)
    assert run.returncode != 0
    expected = (
        f"path {outside} is not shared with machine '{MACHINE}': pymachine mount add {MACHINE} {outside}"
    )
    assert expected in run.stderr
    assert f"shared now: {env['rw']}, {env['ro']} (ro), {env['gone']}, {env['flaky']}" in run.stderr
    assert not outside.parent.exists(), "a refused bind must not make the folder"
    status, body = _create(agent, {"Binds": ["/srv/x:/app"]})
    assert status == 400 and body["message"].startswith(
        f"path /srv/x is not shared with machine '{MACHINE}': pymachine mount add {MACHINE} /srv/x"
    )
    status, body = _create(agent, {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/app"}]})
    assert status == 400 and "path /etc is not shared" in body["message"]


def test_a_link_in_a_share_that_leads_out_of_it_is_refused(env: dict) -> None:
    agent: Agent = env["agent"]
    link = env["rw"] / "to-etc"
    link.symlink_to("/etc")
    try:
        status, body = _create(agent, {"Binds": [f"{link}:/app"]})
        assert status == 400
        assert body["message"].startswith(f"path /etc is not shared with machine '{MACHINE}'")
        assert f"the bind source {link} leads there" in body["message"]
        # nor is a missing -v source below such a link made in the VM folder it leads to
        status, body = _create(agent, {"Binds": [f"{link}/pymachine-made-here:/app"]})
        assert status == 400 and body["message"].startswith("path /etc/pymachine-made-here is not shared")
        assert not Path("/etc/pymachine-made-here").exists()
    finally:
        link.unlink()


def test_a_share_that_is_not_mounted_is_an_error_never_an_empty_folder(env: dict) -> None:
    agent: Agent = env["agent"]
    (env["gone"] / "proj").mkdir(exist_ok=True)
    status, body = _create(agent, {"Binds": [f"{env['gone']}/proj:/app"]})
    assert status == 503
    assert f"share {env['gone']} of machine '{MACHINE}' is not mounted in the VM" in body["message"]


def test_a_restart_while_the_share_is_gone_does_not_bind_the_empty_folder(env: dict) -> None:
    """A restart policy restarts without the API (the runtime's supervisor); after a reboot an sshfs share is
    mounted only once the host agent connects. Neither may bind the empty mountpoint."""
    agent: Agent = env["agent"]
    proj = env["flaky"]  # the share itself (`pymachine mount add dev ~/proj`, then `-v ~/proj:/app`): its
    (proj / "marker").write_text("m")  # mountpoint exists when the share is gone, a path below it does not
    script = 'echo "run:$(ls /app | tr "\\n" ,)"; sleep 0.5; exit 1'
    cid = agent.docker(
        "run", "-d", "--restart", "always", "-v", f"{proj}:/app", agent.busybox, "sh", "-c", script
    ).stdout.strip()  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while agent.docker("logs", cid).stdout.count("run:marker,") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert agent.docker("logs", cid).stdout.count("run:marker,") >= 2
        subprocess.run(["umount", "-l", str(env["flaky"])], check=True)
        time.sleep(4)  # several restart periods: each one must fail at the bind, not run on an empty /app
        runs = agent.docker("logs", cid).stdout.split()
        assert "run:" not in runs, runs
        status, _, body = agent.request("POST", f"/containers/{cid}/restart?t=0")
        assert status == 503 and b"is not mounted in the VM" in body, body
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_a_missing_source_in_a_share_is_made_for_v_but_not_for_mount(env: dict) -> None:
    agent: Agent = env["agent"]
    src = env["rw"] / "new" / "project"
    out = agent.docker(
        "run", "--rm", "-v", f"{src}:/app", agent.busybox, "sh", "-c", "echo hi > /app/f; cat /app/f"
    )
    assert out.stdout.strip() == "hi"
    assert src.is_dir() and (src / "f").read_text() == "hi\n"
    missing = env["rw"] / "not-there"
    run = agent.docker(
        "run",
        "--rm",
        "--mount",
        f"type=bind,source={missing},target=/app",
        agent.busybox,
        "true",
        check=False,
    )
    assert run.returncode != 0
    assert f"bind source path does not exist: {missing}" in run.stderr
    assert not missing.exists()


def test_ro_is_honoured_and_a_read_only_share_is_read_only_whatever_the_flag(env: dict) -> None:
    agent: Agent = env["agent"]
    (env["ro"] / "data").mkdir(exist_ok=True)
    (env["ro"] / "data" / "r").write_text("r\n")
    (env["rw"] / "data").mkdir(exist_ok=True)
    script = "cat /app/r 2>/dev/null; touch /app/w && echo wrote || echo refused"
    (env["rw"] / "data" / "r").write_text("r\n")
    rw_ro = agent.docker("run", "--rm", "-v", f"{env['rw']}/data:/app:ro", agent.busybox, "sh", "-c", script)
    assert rw_ro.stdout.split() == ["r", "refused"]
    ro_rw = agent.docker("run", "--rm", "-v", f"{env['ro']}/data:/app", agent.busybox, "sh", "-c", script)
    assert ro_rw.stdout.split() == ["r", "refused"]
    ro_mount = agent.docker(
        "run", "--rm", "--mount", f"type=bind,source={env['ro']}/data,target=/app", agent.busybox,
        "sh", "-c", script,
    )  # fmt: skip
    assert ro_mount.stdout.split() == ["r", "refused"]
    assert not (env["ro"] / "data" / "w").exists()
    rw_rw = agent.docker("run", "--rm", "-v", f"{env['rw']}/data:/app", agent.busybox, "sh", "-c", script)
    assert rw_rw.stdout.split() == ["r", "wrote"]


def test_the_engine_socket_is_the_one_vm_path_let_through(env: dict) -> None:
    agent: Agent = env["agent"]
    out = agent.docker(
        "run", "--rm", "-v", "/var/run/docker.sock:/var/run/docker.sock", agent.busybox,
        "sh", "-c", "test -S /var/run/docker.sock && echo socket",
    )  # fmt: skip
    assert out.stdout.strip() == "socket"
    status, body = _create(agent, {"Binds": ["/var/run/other.sock:/s"]})
    assert status == 400 and "path /var/run/other.sock is not shared" in body["message"]


def test_a_container_given_the_engine_socket_gets_dockers_api_and_not_the_host_agents(env: dict) -> None:
    """The engine socket a container asks for is Docker's API (root-equivalent, as with Docker), but not the
    host <-> guest protocol: a container must not change the share list the bind rules follow, unmount the
    shares (quiesce), or take the port events the host agent acknowledges."""
    agent: Agent = env["agent"]
    client = unix_http_binary()
    if client is None:
        pytest.fail(
            "gcc with a static libc is needed for tests/support/unix_http.c (apt-get install gcc libc6-dev)"
        )
    tools = env["rw"] / "tools"
    tools.mkdir(exist_ok=True)
    shutil.copy2(client, tools / "unix_http")
    status, _, before = agent.request("GET", "/pymachine/v1/shares")
    assert status == 200, before

    def in_container(method: str, path: str, body: str = "") -> str:
        args = ["/tools/unix_http", "/var/run/docker.sock", method, path] + ([body] if body else [])
        return agent.docker(
            "run", "--rm", "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{tools}:/tools:ro", agent.busybox, *args,
        ).stdout  # fmt: skip

    assert in_container("GET", "/_ping").startswith("HTTP/1.1 200")
    assert '"Id"' in in_container("GET", "/v1.44/containers/json?all=1")  # this very container, listed
    attempts = [
        ("GET", "/pymachine/v1/info", ""),
        ("GET", "/v1.44/pymachine/v1/shares", ""),
        ("GET", "/%70ymachine/v1/events", ""),
        ("PUT", "/pymachine/v1/shares", json.dumps({"shares": [{"path": "/"}]})),
        ("POST", "/pymachine/v1/quiesce", json.dumps({"shares": []})),
        ("POST", "/pymachine/v1/ports/ack", json.dumps({"id": "x"})),
    ]
    for method, path, body in attempts:
        reply = in_container(method, path, body)
        assert reply.startswith("HTTP/1.1 403"), (method, path, reply)
        assert "served to the VM's own processes only" in reply, reply
    # nothing changed: the share list is the seed's, and a path outside it is still refused
    assert agent.request("GET", "/pymachine/v1/shares")[2] == before
    status, body = _create(agent, {"Binds": ["/etc:/host-etc"]})
    assert status == 400 and "path /etc is not shared" in body["message"]
    # the agent's own socket (the VM's side: here the test, in the agent's mount namespace) speaks it
    assert agent.request("GET", "/pymachine/v1/info")[0] == 200


def test_a_hot_plugged_share_is_told_to_the_agent(env: dict, tmp_path: Path) -> None:
    """`pymachine mount add` on a running machine (sshfs mounts at once): the host agent sends the list."""
    agent: Agent = env["agent"]
    late = tmp_path / "late"
    with _mounted(late):
        (late / "f").write_text("late\n")
        assert _create(agent, {"Binds": [f"{late}:/app"]})[0] == 400
        listed = [
            {"path": str(p), "readonly": p == env["ro"]}
            for p in (env["rw"], env["ro"], env["gone"], env["flaky"])
        ]
        status, _, body = agent.request(
            "PUT", "/pymachine/v1/shares", {"shares": [*listed, {"path": str(late)}]}
        )
        assert status == 200, body
        try:
            out = agent.docker("run", "--rm", "-v", f"{late}:/app", agent.busybox, "cat", "/app/f")
            assert out.stdout == "late\n"
            assert agent.request("PUT", "/pymachine/v1/shares", {"shares": "x"})[0] == 400
        finally:
            agent.request("PUT", "/pymachine/v1/shares", {"shares": listed})
        assert _create(agent, {"Binds": [f"{late}:/app"]})[0] == 400


def test_without_a_share_list_bind_sources_stay_guest_paths(tmp_path: Path) -> None:
    src = tmp_path / "guest-folder"  # not a share, not a mountpoint: today's behaviour binds it as is
    src.mkdir()
    (src / "f").write_text("guest\n")
    with running_agent(tmp_path / "a", ["--no-network"]) as agent:
        agent.load_busybox()
        out = agent.docker("run", "--rm", "-v", f"{src}:/app", agent.busybox, "cat", "/app/f")
        assert out.stdout == "guest\n"
        # and a host agent's share list cannot switch the rules on for it
        status, _, _ = agent.request("PUT", "/pymachine/v1/shares", {"shares": []})
        assert status == 409
        out = agent.docker("run", "--rm", "-v", f"{src}:/app", agent.busybox, "cat", "/app/f")
        assert out.stdout == "guest\n"


# -- change events ------------------------------------------------------------------------------------


def _post_changes(agent: Agent, changes: list[dict]) -> dict:
    status, _, body = agent.request("POST", "/pymachine/v1/fs-events", {"changes": changes})
    assert status == 200, body
    return json.loads(body)


def _change(path: Path) -> dict:
    st = path.lstat()
    return {"path": str(path), "exists": True, "mode": stat.S_IMODE(st.st_mode)}


def _watch_events(agent: Agent, deadline: float) -> Iterator[dict]:
    """The host-agent stream's events (hello, ports, watch) until `deadline`."""
    conn = UnixHTTPConnection(str(agent.socket_path), timeout=max(0.1, deadline - time.monotonic()))
    try:
        conn.request("GET", "/pymachine/v1/events")
        resp = conn.getresponse()
        while time.monotonic() < deadline:
            try:
                line = resp.readline()
            except (TimeoutError, http.client.IncompleteRead):
                return
            if not line:
                return
            if line.strip():
                yield json.loads(line)
    finally:
        conn.close()


def _wait_for_watch(agent: Agent, want: list[str], timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        for event in _watch_events(agent, min(deadline, time.monotonic() + 3)):
            if event.get("type") == "watch":
                last = event["paths"]
                if last == want:
                    return last
    return last


def _watching(env: dict, src: Path, target: str) -> str:
    """A container watching its bind `src:target` with inotify, once its watch is set and announced."""
    agent: Agent = env["agent"]
    watcher = inotify_watch_binary()
    if watcher is None:
        pytest.skip("no gcc with a static libc to build the inotify watcher")
    tools = env["rw"] / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "watch").write_bytes(watcher.read_bytes())
    (tools / "watch").chmod(0o755)
    binds = ["-v", f"{src}:{target}", "-v", f"{tools}:/tools:ro"]
    cid = agent.docker("run", "-d", *binds, agent.busybox, "/tools/watch", target).stdout.strip()
    assert _wait_for_watch(agent, sorted([str(src), str(tools)])) == sorted([str(src), str(tools)])
    deadline = time.monotonic() + 20
    while "watching" not in agent.docker("logs", cid).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    return cid


def _saw(agent: Agent, cid: str, bit: int, name: str, timeout: float = 10) -> list[tuple[int, str]]:
    """The watcher's events once one with `bit` for `name` is among them (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    seen = events(agent.docker("logs", cid).stdout)
    while not any(mask & bit and n == name for mask, n in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = events(agent.docker("logs", cid).stdout)
    return seen


def test_host_changes_become_inotify_events_in_the_container_and_only_there(env: dict) -> None:
    agent: Agent = env["agent"]
    proj = env["rw"] / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "a.txt").write_text("one\n")
    other = env["rw"] / "other"
    other.mkdir(exist_ok=True)
    (other / "b.txt").write_text("b\n")
    cid = _watching(env, proj, "/app")
    try:
        before = (proj / "a.txt").stat()
        # what the host agent posts after an edit on the host: the file's own mode
        assert _post_changes(agent, [_change(proj / "a.txt")]) == {"applied": 1, "skipped": 0}
        # outside the watched bind sources nothing is touched, whatever the poster says; a link in the bind
        # source is resolved inside it, so it cannot steer the chmod onto a VM file either
        (proj / "etc-link").symlink_to("/etc")
        guest_file = Path("/etc/hostname")
        kept = guest_file.stat().st_mode
        bogus = {"exists": True, "mode": 0o777}
        attack = [
            {"path": str(other / "b.txt"), **bogus},
            {"path": str(guest_file), **bogus},
            {"path": str(proj / "etc-link" / "hostname"), **bogus},
            {"path": str(proj / ".." / ".." / ".." / "etc" / "hostname"), **bogus},
            {"path": str(proj / "x"), "exists": False},
        ]
        assert _post_changes(agent, attack) == {"applied": 0, "skipped": 5}
        assert guest_file.stat().st_mode == kept
        assert stat.S_IMODE((other / "b.txt").stat().st_mode) != 0o777
        seen = _saw(agent, cid, IN_ATTRIB, "a.txt")
        assert any(mask & IN_ATTRIB and name == "a.txt" for mask, name in seen), seen
        after = (proj / "a.txt").stat()
        assert (after.st_mtime_ns, after.st_atime_ns, after.st_mode) == (
            before.st_mtime_ns,
            before.st_atime_ns,
            before.st_mode,
        )
        assert (proj / "a.txt").read_text() == "one\n"
    finally:
        agent.docker("rm", "-f", cid, check=False)
    assert _wait_for_watch(agent, []) == []


def test_a_change_that_arrives_late_never_moves_the_files_times(env: dict) -> None:
    """The host saves twice within the forwarding delay (a formatter after a save): the change posted for the
    first save arrives after the second. Applying it must not set the file back to the first save's mtime, or
    make and editors would take the new content for old."""
    agent: Agent = env["agent"]
    proj = env["rw"] / "late"
    proj.mkdir(exist_ok=True)
    f = proj / "app.py"
    f.write_text("first\n")
    cid = _watching(env, proj, "/app")
    try:
        stale = _change(f)
        time.sleep(0.05)
        f.write_text("second save\n")
        now = f.stat()
        assert _post_changes(agent, [stale]) == {"applied": 1, "skipped": 0}
        after = f.stat()
        assert (after.st_mtime_ns, after.st_size) == (now.st_mtime_ns, now.st_size)
        assert f.read_text() == "second save\n"
    finally:
        agent.docker("rm", "-f", cid, check=False)


def test_a_read_only_share_still_wakes_a_watcher(env: dict) -> None:
    agent: Agent = env["agent"]
    ro = env["ro"] / "site"
    ro.mkdir(exist_ok=True)
    (ro / "index.html").write_text("x\n")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(env["ro"])], check=True)  # a real ro share
    cid = ""
    try:
        cid = _watching(env, ro, "/site")
        assert _post_changes(agent, [_change(ro / "index.html")]) == {"applied": 1, "skipped": 0}
        seen = _saw(agent, cid, IN_OPEN, "index.html")
        assert any(mask & IN_OPEN and name == "index.html" for mask, name in seen), seen
    finally:
        if cid:
            agent.docker("rm", "-f", cid, check=False)
        subprocess.run(["mount", "-o", "remount,bind,rw", str(env["ro"])], check=False)


def test_the_agent_says_which_shares_it_has_so_a_host_agent_sends_only_a_change(env: dict) -> None:
    """A cold boot's seed gave the agent the host's share list: its `/info` says so in the PUT's shape, and
    the host agent then sends nothing (protocol.same_shares); after a PUT it says the new list."""
    agent: Agent = env["agent"]
    as_host_sends = [
        {"path": str(env["flaky"]), "readonly": False},
        {"path": str(env["rw"]), "readonly": False},
        {"path": str(env["ro"]), "readonly": True},
        {"path": str(env["gone"]), "readonly": False},
    ]
    status, _, body = agent.request("GET", "/pymachine/v1/info")
    info = json.loads(body)
    assert status == 200 and info["agent_checksum"] and protocol.same_shares(info["shares"], as_host_sends), (
        info
    )
    status, _, body = agent.request("GET", "/pymachine/v1/shares")
    listed = json.loads(body)
    assert status == 200 and protocol.same_shares(listed["shares"], as_host_sends), listed
    # the init's mount report: /run/pymachine/shares.json is the VM's; this host has none
    assert "report" in listed and listed["report"] is None
    fewer = as_host_sends[1:]
    try:
        assert agent.request("PUT", "/pymachine/v1/shares", {"shares": fewer})[0] == 200
        info = json.loads(agent.request("GET", "/pymachine/v1/info")[2])
        assert protocol.same_shares(info["shares"], fewer) and not protocol.same_shares(
            info["shares"], as_host_sends
        )
    finally:
        assert agent.request("PUT", "/pymachine/v1/shares", {"shares": as_host_sends})[0] == 200
