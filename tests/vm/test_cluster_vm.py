"""A real Swarm cluster of two machines (Debian's dockerd in TCG guests) driven by the real docker CLI from
the host: a replicated service spread over both nodes, its routing-mesh port on the host's localhost, a node
stopped and its task rescheduled on the other, and `cluster rm` leaving nothing behind.

One cluster for the whole module (two boots are the expensive part); the tests run in order."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import busybox_tarball
from support.machines import SHARED_CACHE, _remove, cli, ensure_libvirtd, home_env, new_home, unique_name

pytestmark = [pytest.mark.vm]

SERVICE = "web"


class Cluster:
    def __init__(self, home: Path, name: str) -> None:
        self.home, self.name = home, name
        self.nodes = [name, f"{name}-2"]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 900) -> str:
        r = self.cli(*args, timeout=timeout)
        assert r.returncode == 0, f"pymachine {' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r.stdout

    def docker(self, *args: str, timeout: float = 120) -> str:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.docker_env,
                           timeout=timeout)  # fmt: skip
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r.stdout

    @property
    def docker_env(self) -> dict[str, str]:
        # what `eval "$(pymachine docker-env NAME)"` sets, applied here
        env = {**os.environ, "DOCKER_CONFIG": str(self.home / "docker-config")}
        for line in self.ok("docker-env", self.name).splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                env[key] = value.strip("'\"")
        env.pop("DOCKER_CONTEXT", None)
        return env

    def tasks(self) -> list[tuple[str, str]]:
        """(node, current state) of the service's tasks that should run."""
        out = self.docker("service", "ps", SERVICE, "--filter", "desired-state=running",
                          "--format", "{{.Node}} {{.CurrentState}}")  # fmt: skip
        return [(line.split()[0], line.split()[1]) for line in out.splitlines() if line.strip()]


def wait_for(what: str, check, timeout: float = 240.0, every: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, OSError) as exc:
            last = exc
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def swarm() -> Iterator[Cluster]:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed on this host")
    ensure_libvirtd()
    home = new_home()
    c = Cluster(home, unique_name("cl"))
    try:
        # The direct-QEMU driver: the private NIC is the same multicast netdev on both drivers (the libvirt
        # domain XML carrying it is unit-tested), and two boots do not queue behind a shared libvirtd.
        c.ok("cluster", "create", c.name, "--nodes", "2", "--driver", "qemu", timeout=1800)
        yield c
    finally:
        with home_env(home):
            from pymachine.hostvm import cluster, machines

            if cluster.names():
                cluster.remove(c.name)
            for node in c.nodes:
                if machines.exists(node):
                    machines.delete(node, force=True)
        _remove(home)


def test_two_nodes_form_a_swarm(swarm: Cluster) -> None:
    def both_ready() -> dict | None:  # type: ignore[type-arg]
        info = json.loads(swarm.ok("cluster", "inspect", swarm.name))
        statuses = [(n["swarm"] or {}).get("status") for n in info["nodes"]]
        return info if statuses == ["Ready", "Ready"] else None

    info = wait_for("both nodes Ready in the Swarm's view", both_ready, timeout=300, every=5)
    assert [n["name"] for n in info["nodes"]] == swarm.nodes
    assert [n["role"] for n in info["nodes"]] == ["manager", "worker"]
    assert all(n["state"] == "running" for n in info["nodes"])
    assert info["nodes"][0]["swarm"]["manager_status"] == "Leader"
    listed = swarm.ok("cluster", "list")
    assert swarm.name in listed and "2/2" in listed
    # the manager's engine is Debian's dockerd, reached through the forwarded socket
    version = json.loads(swarm.docker("version", "--format", "{{json .Server}}"))
    assert version["Version"].startswith("20.10"), version


def test_replicated_service_spreads_and_its_port_answers_on_the_host(swarm: Cluster) -> None:
    loaded = swarm.ok("cluster", "load", swarm.name, str(busybox_tarball()), timeout=600)
    assert all(f"{node}: Loaded image" in loaded for node in swarm.nodes), loaded
    port = free_port()
    swarm.docker("service", "create", "--detach", "--no-resolve-image", "--name", SERVICE,
                 "--replicas", "2", "-p", f"{port}:80",
                 "pymachine/busybox:latest", "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
    swarm.port = port  # type: ignore[attr-defined]

    def spread() -> bool:
        tasks = swarm.tasks()
        return len(tasks) == 2 and {n for n, s in tasks if s == "Running"} == set(swarm.nodes)

    wait_for("two running tasks, one per node", spread, timeout=300)
    body = wait_for("the routing-mesh port on the host's localhost", lambda: http_get(port), timeout=120)
    assert "pymachine" in body.lower() or "<html" in body.lower(), body
    # the host agent listens on loopback only
    forwards = json.loads(swarm.ok("inspect", swarm.name))["host_agent"]["forwards"]
    assert [(f["host_ip"], f["host_port"], f["guest_port"]) for f in forwards] == [("127.0.0.1", port, port)]


def test_a_stopped_node_has_its_task_rescheduled(swarm: Cluster) -> None:
    port = swarm.port  # type: ignore[attr-defined]
    worker = swarm.nodes[1]
    # Forced off after a second: the node is lost as a QEMU that dies loses it (docs/cluster.md), without the
    # TCG guest's graceful power-off first (dockerd stopping its task); the managers see the same missed
    # heartbeats either way, and the wait for those (about a minute) is what this test is about.
    swarm.ok("stop", "--shutdown", "--timeout", "1", worker, timeout=300)

    def moved() -> bool:
        tasks = swarm.tasks()
        return len(tasks) == 2 and all(n == swarm.name and s == "Running" for n, s in tasks)

    wait_for("both tasks running on the manager", moved, timeout=300)
    assert wait_for("the port after the move", lambda: http_get(port), timeout=120)
    nodes = {n["name"]: n for n in json.loads(swarm.ok("cluster", "inspect", swarm.name))["nodes"]}
    assert nodes[worker]["state"] != "running"
    assert nodes[worker]["swarm"]["status"] == "Down"


def test_cluster_rm_leaves_nothing(swarm: Cluster) -> None:
    with home_env(swarm.home):
        from pymachine.hostvm import paths
        from pymachine.hostvm.hostagent import launcher

        agents = {node: launcher.agent_pid(node) for node in swarm.nodes}
        dirs = [paths.machine(node).dir for node in swarm.nodes]
    assert agents[swarm.name], "the manager's host agent should run before rm"
    swarm.ok("cluster", "rm", swarm.name, timeout=300)
    assert swarm.name not in swarm.ok("cluster", "list")
    assert not any(d.exists() for d in dirs), dirs
    for pid in filter(None, agents.values()):
        wait_for(f"host agent {pid} to exit", lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=30)
    domains = [f"pymachine-{node}" for node in swarm.nodes]
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_names(p, swarm.nodes)]
    assert not leftover, [(p.name, (p / "cmdline").read_bytes()[:200]) for p in leftover]
    virsh = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert not set(domains) & set(virsh.stdout.split()), virsh.stdout
    assert SHARED_CACHE.exists()  # the image cache is shared: rm never touches it


def _cmdline_names(proc: Path, nodes: list[str]) -> bool:
    """A QEMU (`-name guest=pymachine-NODE,…`) or a host agent (`… hostagent NODE`) of one of the nodes."""
    try:
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    qemu = any(a.startswith(f"guest=pymachine-{n},") for a in argv for n in nodes)
    agent = any("hostagent" in a for a in argv) and any(n in argv for n in nodes)
    return qemu or agent
