"""Issue 13, change events end to end without a VM: the real host agent, connected through a real OpenSSH sshd
on 127.0.0.1 (standing in for the guest's) to the real guest agent with a `shares` list, and a container
watching its bind mount with inotify.

On this host the share is a local tmpfs, so a host edit already fires IN_MODIFY/IN_CLOSE_WRITE in the
container natively; what only the forwarding chain produces is the IN_ATTRIB on the edited file (the guest
agent setting the host's mode again), which is what the test waits for. The vm tier repeats this over
virtiofs, where the native events do not exist.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent
from support.hostagent_sshd import LocalSshd, unavailable
from support.hostagent_vm import wait_for
from support.inotify import IN_ATTRIB, events, inotify_watch_binary

pytest.importorskip("watchdog")
from pymachine.hostvm.hostagent.daemon import Agent as HostAgent  # noqa: E402

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
DEADLINE = 10.0  # seconds: a bound against hanging; the goal (1 s) is reported, not asserted


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[dict]:
    share = tmp_path / "home"
    share.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(share)], check=True)
    sshd = LocalSshd(tmp_path / "sshd").start()
    try:
        settings = tmp_path / "agent.json"
        settings.write_text(json.dumps({"machine": "chain", "shares": [{"path": str(share)}]}))
        with running_agent(tmp_path / "guest", ["--settings", str(settings), "--no-network"]) as guest:
            guest.load_busybox()
            machine_dir = tmp_path / "machine"
            machine_dir.mkdir()
            (machine_dir / "config.json").write_text(json.dumps({"shares": [{"path": str(share)}]}))
            host = HostAgent(
                "chain",
                sshd.connect,
                machine_dir=machine_dir,
                guest_socket=str(guest.socket_path),
                probe_interval=0.5,
                reprovision=False,
            )
            host.start()
            try:
                wait_for(lambda: host.status()["state"] == "ready", "the host agent to be ready")
                yield {"guest": guest, "host": host, "share": share}
            finally:
                host.stop()
    finally:
        sshd.stop()
        subprocess.run(["umount", "-l", str(share)], check=False)


def _attribs(guest: Agent, cid: str, name: str) -> int:
    return sum(1 for mask, n in events(guest.docker("logs", cid).stdout) if mask & IN_ATTRIB and n == name)


def test_a_host_edit_reaches_inotify_in_the_container_once(
    chain: dict, capsys: pytest.CaptureFixture
) -> None:
    watcher = inotify_watch_binary()
    if watcher is None:
        pytest.skip("no gcc with a static libc to build the inotify watcher")
    guest, host, share = chain["guest"], chain["host"], chain["share"]
    (share / "tools").mkdir()
    (share / "tools" / "watch").write_bytes(watcher.read_bytes())
    (share / "tools" / "watch").chmod(0o755)
    proj = share / "proj"
    proj.mkdir()
    (proj / "app.py").write_text("v1\n")
    cid = guest.docker(
        "run", "-d", "-v", f"{proj}:/app", "-v", f"{share / 'tools'}:/tools:ro", guest.busybox,
        "/tools/watch", "/app",
    ).stdout.strip()  # fmt: skip
    try:
        wait_for(
            lambda: str(proj) in host.status()["watch"]["paths"], "the host agent to watch the bind source"
        )
        wait_for(lambda: "watching" in guest.docker("logs", cid).stdout, "the watcher in the container")
        latencies = []
        for done in range(3):
            start = time.monotonic()
            (proj / "app.py").write_text(f"v{done + 2}\n")
            wait_for(lambda n=done: _attribs(guest, cid, "app.py") > n, "IN_ATTRIB on app.py", DEADLINE)
            latencies.append(time.monotonic() - start)
            time.sleep(0.3)
        # the guest's utime comes back to the host as an attribute change: it must not start a ping-pong
        settled = _attribs(guest, cid, "app.py")
        time.sleep(1.5)
        assert _attribs(guest, cid, "app.py") == settled == 3
        assert host.status()["watch"]["echoes"] >= 1
        # a created file: IN_ATTRIB with its name too (the create itself fires natively only on this host)
        start = time.monotonic()
        (proj / "new.py").write_text("n\n")
        wait_for(lambda: _attribs(guest, cid, "new.py") >= 1, "IN_ATTRIB on new.py", DEADLINE)
        latencies.append(time.monotonic() - start)
        with capsys.disabled():
            rounded = [round(x, 3) for x in latencies]
            print(f"\nhost edit → IN_ATTRIB in the container (sshd chain): {rounded} s")
    finally:
        guest.docker("rm", "-f", cid, check=False)
    wait_for(lambda: host.status()["watch"]["paths"] == [], "the watch to end with the container")
