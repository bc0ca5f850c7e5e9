"""Start the real guest agent on this host (privileged / compat tiers) and talk to it.

    with running_agent(tmp_path) as agent:
        agent.docker("run", "--rm", agent.busybox, "echo", "hi")    # the real docker CLI
        agent.client()                                                # a docker-py client
        agent.request("GET", "/_ping")                                # raw HTTP over the unix socket

`busybox_tarball()` gives a docker-archive of `pymachine/busybox:latest`: the builtin image when
`pymachine.hostvm.container_images` exists, else one made here from /bin/busybox (busybox-static).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import SHARED_CACHE, leftovers

REPO = Path(__file__).resolve().parents[2]
AGENT_SRC = REPO / "guest-agent"
BUSYBOX_REF = "pymachine/busybox:latest"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


# -- a busybox image without any registry ----------------------------------------------------------


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.linkname, info.mtime = mode, kind, link, 0
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if data is not None and kind == tarfile.REGTYPE else None)


def _busybox_layer() -> bytes:
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in (
            "bin",
            "dev",
            "etc",
            "home",
            "proc",
            "root",
            "sys",
            "tmp",
            "usr",
            "usr/bin",
            "var",
            "var/www",
        ):
            _add(tar, d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        _add(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )
        _add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def _make_busybox_archive(path: Path) -> None:
    layer = _busybox_layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": "tests/support/agent.py busybox layer"}
        ],
    }
    cfg_bytes = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": cfg_name, "RepoTags": [BUSYBOX_REF], "Layers": [layer_name]}]
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, cfg_name, cfg_bytes)
        _add(tar, layer_name, layer)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, path)


def busybox_tarball() -> Path:
    try:
        from pymachine.hostvm.container_images import ensure_container_image  # type: ignore[import-not-found]
    except ImportError:
        ensure_container_image = None
    if ensure_container_image is not None:
        return Path(ensure_container_image("pymachine/busybox"))
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    path = SHARED_CACHE / "test-busybox.tar"
    if not path.exists():
        _make_busybox_archive(path)
    return path


# -- the agent process -------------------------------------------------------------------------------


@dataclass
class Agent:
    socket_path: Path
    state_dir: Path
    proc: subprocess.Popen
    log_path: Path
    busybox: str = BUSYBOX_REF
    network_options: dict[str, Any] = field(default_factory=dict)
    _clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.url
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = str(self.state_dir.parent / "docker-config")
        return env

    def docker(
        self, *args: str, input: bytes | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real docker CLI against this agent."""
        proc = subprocess.run(
            ["docker", *args],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}"
                f"\nagent log tail:\n{self.log_tail()}"
            )
        return proc

    def client(self) -> Any:
        import docker

        c = docker.DockerClient(base_url=self.url, timeout=120)
        self._clients.append(c)
        return c

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = UnixHTTPConnection(str(self.socket_path), timeout)
        try:
            data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def load_busybox(self) -> None:
        self.docker("load", "-i", str(busybox_tarball()))

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        # containers outlive the agent by design; a test run must not leave any behind
        with contextlib.suppress(Exception):
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # the agent keeps kernel network state for its successor; a test agent has none: drop ours
        if self.network_options:
            opts = self.network_options
            subprocess.run(["ip", "link", "del", opts["default_bridge"]], capture_output=True)
            for prefix in (opts["bridge_prefix"], opts["veth_prefix"]):
                links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.split(
                    "\n"
                )
                for line in links:
                    name = line.split(" ", 1)[0].split("@", 1)[0]
                    if name.startswith(prefix):
                        subprocess.run(["ip", "link", "del", name], capture_output=True)
            table = opts["nft_table"]
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
            if tag := leftovers.tag_of(opts):
                leftovers.release(tag)


class RemoteAgent(Agent):
    """An engine this process did not start (a VM's forwarded socket): same helpers, no process to stop."""

    @classmethod
    def connect(cls, docker_host: str, base: Path) -> RemoteAgent:
        path = Path(docker_host.removeprefix("unix://"))
        return cls(path, base / "state", None, base / "none.log")  # type: ignore[arg-type]

    def stop(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()


def _used_ten_octets() -> set[int]:
    """The N of every 10.N.x.x address on this host's interfaces."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    used = set()
    for word in out.split():
        parts = word.split(".")
        if len(parts) == 4 and parts[0] == "10" and parts[1].isdigit():
            used.add(int(parts[1]))
    return used


def _worker_octets() -> range:
    """The 10.N subnets this test process may pick from: all of 64-127, or under pytest-xdist a slice of its
    own per worker (two workers starting agents at once could pick one N before either's bridge exists)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or not worker[2:].isdigit() or count < 2:
        return range(64, 128)
    size = max(1, 64 // count)
    first = 64 + (int(worker[2:]) % count) * size
    return range(first, first + size)


def isolated_network_options() -> dict[str, Any]:
    """Names and subnets of this agent's own: several agents share this host's kernel (other tests, other
    engineers), and an agent's network reconcile deletes bridges/veths with its prefixes it does not know."""
    import random

    used = _used_ten_octets()
    tag = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3))
    # A subnet no interface of this host has: with a bridge of a killed agent left on 10.N (or a parallel
    # run's), routes to this agent's containers went to that bridge and published ports, pings and links
    # failed for the whole session (the compat tier under parallel runs, about one in three sessions).
    octets = _worker_octets()
    octet = random.choice([n for n in octets if n not in used] or list(octets))
    return {
        "default_bridge": f"pt{tag}0",
        "bridge_prefix": f"pt{tag}-",
        "veth_prefix": f"pv{tag}",
        "nft_table": f"pmt_{tag}",
        "default_subnet": f"10.{octet}.255.0/24",
        "address_pools": [[f"10.{octet}.0.0/17", 24]],
    }


def start_agent(
    base: Path,
    extra_args: list[str] | None = None,
    timeout: float = 30,
    network_options: dict[str, Any] | None = None,
) -> Agent:
    """Start an agent on `base`/state; pass the `network_options` of a previous agent to restart it."""
    base.mkdir(parents=True, exist_ok=True)
    sock_dir = Path(tempfile.mkdtemp(prefix="pma-"))  # short: unix socket paths are limited to 108 bytes
    socket_path = sock_dir / "docker.sock"
    state_dir = base / "state"
    log_path = base / "agent.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(AGENT_SRC) + os.pathsep + env.get("PYTHONPATH", "")
    net_opts: dict[str, Any] = {}
    if "PYMACHINE_AGENT_NETWORK" not in env:
        net_opts = network_options or isolated_network_options()
        env["PYMACHINE_AGENT_NETWORK"] = json.dumps(net_opts)
        if tag := leftovers.tag_of(net_opts):
            leftovers.claim(tag)  # a later session's sweep leaves them to us while we live
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pymachine_agent",
                "serve",
                "--socket",
                str(socket_path),
                "--state",
                str(state_dir),
                "--log-level",
                "DEBUG",
                *(extra_args or []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(base),
            start_new_session=True,
        )
    agent = Agent(socket_path, state_dir, proc, log_path, network_options=net_opts)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited with {proc.returncode}:\n{agent.log_tail()}")
        try:
            status, _, body = agent.request("GET", "/_ping", timeout=2)
            if status == 200 and body == b"OK":
                return agent
        except OSError:
            pass
        time.sleep(0.1)
    agent.stop()
    raise RuntimeError(f"the agent did not answer /_ping within {timeout}s:\n{agent.log_tail()}")


@contextlib.contextmanager
def running_agent(base: Path, extra_args: list[str] | None = None) -> Iterator[Agent]:
    agent = start_agent(base, extra_args)
    try:
        yield agent
    finally:
        agent.stop()
