"""The guest agent's start as the guest init runs it (issue 14, "cold boot faster"): a real agent here.

What it imports before it answers a host agent (`/_ping`, `/info`, `/pymachine/v1/info`, the hello on the
event stream): not the HTTP client (`ping` only; email and ssl come with it), not the build package nor the
registry, save/load and commit code, not uuid and platform, not the serial path's multiplexer on a computer
without a virtio-serial device. Every module costs boot time under TCG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.agent import AGENT_SRC, Agent, UnixHTTPConnection, isolated_network_options

# Runs the agent's own `main` as `python3 -S -m pymachine_agent serve` would; SIGUSR1 writes sys.modules out.
DRIVER = r"""
import json, os, signal, sys
out = sys.argv[1]
def dump(signum, frame):
    with open(out + ".tmp", "w") as fh:
        json.dump(sorted(sys.modules), fh)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
from pymachine_agent.__main__ import main
sys.exit(main(sys.argv[2:]))
"""

NOT_AT_START = (
    "http.client",
    "email",
    "ssl",
    "pymachine_agent.build",
    "pymachine_agent.images.registry",
    "pymachine_agent.images.regclient",
    "pymachine_agent.images.archive",
    "pymachine_agent.images.commit",
    "pymachine_agent.engine.commit",
    "uuid",  # with `platform` and libuuid's dlopen: event ids are secrets.token_hex
    "platform",  # os.uname().machine says the same
)


@contextmanager
def driven_agent(base: Path) -> Iterator[tuple[Agent, Path]]:
    base.mkdir(parents=True, exist_ok=True)
    sock_dir = Path(tempfile.mkdtemp(prefix="pmb-"))  # unix socket paths are limited to 108 bytes
    modules = base / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"PYTHONPATH": str(AGENT_SRC), "PYMACHINE_AGENT_NETWORK": json.dumps(isolated_network_options())}
    log = base / "agent.log"
    argv = [
        sys.executable,
        "-S",
        "-c",
        DRIVER,
        str(modules),
        "serve",
        "--socket",
        str(sock_dir / "docker.sock"),
    ]
    argv += ["--state", str(base / "state"), "--log-file", str(log)]
    with open(base / "stdout.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    agent = Agent(sock_dir / "docker.sock", base / "state", proc, log)
    try:
        yield agent, modules
    finally:
        agent.stop()


def wait_answering(agent: Agent, deadline: float) -> None:
    while True:
        assert agent.proc.poll() is None, f"the agent exited:\n{agent.log_tail()}"
        try:
            if agent.request("GET", "/_ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the agent did not answer:\n{agent.log_tail()}"
        time.sleep(0.05)


def hello(agent: Agent) -> dict:
    conn = UnixHTTPConnection(str(agent.socket_path), timeout=30)
    try:
        conn.request("GET", "/pymachine/v1/events")
        return json.loads(conn.getresponse().readline())
    finally:
        conn.close()


def test_answering_a_host_agent_imports_no_client_build_or_registry_code(tmp_path: Path) -> None:
    with driven_agent(tmp_path / "a") as (agent, modules_file):
        wait_answering(agent, time.monotonic() + 60)
        assert agent.request("GET", "/info")[0] == 200
        status, _, body = agent.request("GET", "/pymachine/v1/info")
        assert status == 200 and json.loads(body)["agent_checksum"]
        assert hello(agent)["type"] == "hello"
        os.kill(agent.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not modules_file.exists():
            assert time.monotonic() < deadline, "the agent wrote no module list"
            time.sleep(0.05)
        modules = json.loads(modules_file.read_text())
    assert "pymachine_agent.engine" in modules and "pymachine_agent.api" in modules  # the list is the agent's
    loaded = [m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_AT_START)]
    assert loaded == [], f"imported before the first answers (costs boot time under TCG): {loaded}"
    # the serial path's multiplexer only where there is a virtio-serial device (off by default in machines)
    assert ("pymachine_agent.serialmux" in modules) == has_virtio_serial(), modules


def has_virtio_serial() -> bool:
    from pymachine_agent.__main__ import VIRTIO_CONSOLE_IDS, _pci_devices, _pci_id

    return any(_pci_id(dev) in VIRTIO_CONSOLE_IDS for dev in _pci_devices())
