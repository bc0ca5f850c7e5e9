"""Clusters: several machines on a private network, each running Debian's dockerd, joined into a Swarm.

A cluster is nothing but its machines: node 1 is named like the cluster (so `pymachine docker-env NAME` and
the `pymachine-NAME` docker context reach its first manager), nodes 2..N are `NAME-2`…; each node's
config.json carries `cluster` (name, role, index, private address, the multicast group of the private
network). There is no cluster file to drift from the machines: list and inspect read the machines, and the
Swarm's own view (`docker node ls` on the manager).

The private network is QEMU's multicast socket netdev on the host's loopback (domain.VMSpec.private_net_args):
only the cluster's VMs join its group, nothing is routed off this host, and each VM keeps its restricted
user-mode network for SSH. Swarm runs on it: the control plane, gossip and the overlay's VXLAN.
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import machines, paths, ssh
from .errors import NotFoundError, PymachineError, UsageError
from .progress import Progress, StageProgress

if TYPE_CHECKING:
    import paramiko  # 0.1 s: imported where a node is reached, not for `cluster --help` or `cluster list`

log = logging.getLogger(__name__)
SUBNET = "192.168.77"  # per cluster: clusters never share a wire (each has its own multicast group)
PREFIX = 24
FIRST_HOST = 11
MAX_NODES = 16
SWARM_READY_S = 300.0  # a TCG node on a busy 2-core host joins in minutes, not seconds


@dataclass
class ClusterNode:
    name: str
    role: str  # manager | worker (as created)
    address: str  # on the private network
    state: str  # the machine's: running | stopped | …
    swarm: dict[str, Any] | None = None  # the manager's view: status, availability, manager_status


@dataclass
class Cluster:
    name: str
    nodes: list[ClusterNode] = field(default_factory=list)
    network: str = ""  # the private subnet
    swarm_error: str | None = None  # why the Swarm's view is missing (no manager answers)

    @property
    def managers(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.role == "manager"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def node_names(name: str, nodes: int) -> list[str]:
    return [name] + [f"{name}-{i}" for i in range(2, nodes + 1)]


def plan(name: str, nodes: int, managers: int, rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Pure: each node's `cluster` config (role, index, address, the cluster's multicast group and a MAC)."""
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes must be between 1 and {MAX_NODES} (got {nodes})")
    if not 1 <= managers <= nodes:
        raise UsageError(f"--managers must be between 1 and the number of nodes ({nodes}; got {managers})")
    rng = rng or random.SystemRandom()
    # 239.255.0.0/16 is the organisation-local scope; QEMU sends with TTL 1 on 127.0.0.1 besides
    group = f"239.255.{rng.randrange(256)}.{rng.randrange(1, 255)}:{rng.randrange(20000, 60000)}"
    mac = f"52:54:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}"
    return [
        {
            "name": name,
            "index": i,
            "role": "manager" if i <= managers else "worker",
            "address": f"{SUBNET}.{FIRST_HOST + i - 1}/{PREFIX}",
            "mcast": group,
            "mac": f"{mac}:{i:02x}",
        }
        for i in range(1, nodes + 1)
    ]


# -- create ---------------------------------------------------------------------------------------------
def create(
    name: str,
    nodes: int = 2,
    managers: int = 1,
    *,
    cpus: int | str | None = 1,
    memory: int | str | None = None,
    disk: int | str | None = None,
    driver: str | None = None,
    connect: str | None = None,
    progress: Progress | None = None,
) -> Cluster:
    """Create the nodes, boot them (in parallel), and form the Swarm; on any failure every node made so far
    is deleted again."""
    say = progress or (lambda _m: None)
    configs = plan(name, nodes, managers)
    names = node_names(name, nodes)
    taken = [n for n in names if machines.exists(n)]
    if taken:
        raise UsageError(
            f"cannot create cluster '{name}': machine(s) {', '.join(taken)} exist already",
            hint="pick another cluster name, or delete those machines",
        )
    made: list[str] = []
    try:
        for node, cfg in zip(names, configs, strict=True):
            say(f"{node}: creating ({cfg['role']}, {cfg['address']})")
            machines.create(node, cpus, memory, disk, driver, connect, _prefixed(say, node),
                            home_mount=False, idle_suspend=0, cluster=cfg)  # fmt: skip
            made.append(node)
        _start_all(names, say)
        _form_swarm(names, configs, say)
    except BaseException:
        for node in reversed(made):
            try:
                machines.delete(node, force=True)
            except PymachineError as exc:
                log.warning("could not delete %s after the failed create: %s", node, exc)
        raise
    return inspect(name, swarm=False)  # every node is Ready: _wait_ready asked the Swarm already


def _prefixed(say: Progress, node: str) -> Progress:
    """Progress of one node among several running at once: plain lines, each named after its node."""

    def out(message: Any) -> None:
        if isinstance(message, StageProgress) and message.state == "running":
            return  # a spinner per node would fight over the terminal line; the outcome is enough
        say(f"{node}: {message}")

    return out


def _start_all(names: list[str], say: Progress) -> None:
    errors: dict[str, BaseException] = {}

    def boot(node: str) -> None:
        try:
            machines.start(node, _prefixed(say, node))
        except BaseException as exc:  # noqa: BLE001 - reported below, for every node that failed
            errors[node] = exc

    threads = [threading.Thread(target=boot, args=(n,), name=f"start-{n}") for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        first = next(iter(errors.values()))
        failed = ", ".join(errors)
        if isinstance(first, PymachineError):
            raise PymachineError(
                f"node(s) {failed} did not start: {first.message}", hint=first.hint
            ) from first
        raise PymachineError(f"node(s) {failed} did not start: {first}") from first


def _run(node: str, command: str, timeout: float = 120) -> str:
    import paramiko

    try:
        status, out, err = ssh.run(node, command, timeout=timeout)
    except (OSError, paramiko.SSHException) as exc:  # TimeoutError included: a node too busy to answer
        raise PymachineError(
            f"'{command}' on node {node} did not finish: {exc or type(exc).__name__}",
            hint=f"is the node running? pymachine list; its engine's log: pymachine ssh {node} -- "
            "tail -50 /var/log/dockerd.log",
        ) from exc
    if status != 0:
        raise PymachineError(
            f"'{command}' failed on node {node} (exit {status}): "
            + err.decode(errors="replace").strip()[-400:],
            hint=f"dockerd's log: pymachine ssh {node} -- tail -50 /var/log/dockerd.log",
        )
    return out.decode(errors="replace").strip()


def _wait_dockerd(node: str) -> None:
    # the socket exists (the start stages waited for it) a moment before dockerd answers on it
    _run(node, "for i in $(seq 120); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; docker info")


def _form_swarm(names: list[str], configs: list[dict[str, Any]], say: Progress) -> None:
    first, addr = names[0], configs[0]["address"].split("/")[0]
    _wait_dockerd(first)
    say(f"{first}: docker swarm init --advertise-addr {addr}")
    init = f"docker swarm init --advertise-addr {addr} --listen-addr {addr}:2377 --dispatcher-heartbeat 20s"
    # Heartbeats every 20 s (Docker's default is 5; a node is Down after 3 missed): TCG nodes on a loaded
    # host missed 5 s and even 10 s ones and flapped between Ready and Down, their tasks moving each time. A
    # stopped node is declared Down after about a minute.
    _run(first, init)
    tokens = {
        role: _run(first, f"docker swarm join-token -q {role}") for role in ("manager", "worker")
    }  # fmt: skip
    for node, cfg in zip(names[1:], configs[1:], strict=True):
        _wait_dockerd(node)
        say(f"{node}: joining the swarm as a {cfg['role']}")
        own = cfg["address"].split("/")[0]
        join = (f"docker swarm join --token {shlex.quote(tokens[cfg['role']])} "
                f"--advertise-addr {own} --listen-addr {own}:2377 {addr}:2377")  # fmt: skip
        # dockerd gives up waiting after 20 s but goes on joining ("… will continue in the background"):
        # on a busy host a TCG node takes longer than that; the wait for Ready below decides.
        status, _, err = ssh.run(node, join, timeout=120)
        if status != 0 and b"continue in the background" not in err:
            raise PymachineError(
                f"node {node} could not join the swarm: {err.decode(errors='replace').strip()[-400:]}",
                hint=f"dockerd's log: pymachine ssh {node} -- tail -50 /var/log/dockerd.log",
            )
    _wait_ready(first, len(names))


def _wait_ready(manager: str, count: int) -> None:
    script = (
        f"for i in $(seq {int(SWARM_READY_S * 2)}); do "  # 0.5 s each
        f"[ \"$(docker node ls --format '{{{{.Status}}}}' | grep -c Ready)\" -ge {count} ] && exit 0; "
        "sleep 0.5; done; docker node ls; exit 1"
    )
    _run(manager, script, timeout=SWARM_READY_S + 30)


# -- list / inspect ------------------------------------------------------------------------------------
def _members() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Cluster name → [(machine, its `cluster` config)], from every machine's config.json."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    root = paths.machines_dir()
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            node = json.loads((d / "config.json").read_text()).get("cluster")
        except (OSError, ValueError):
            continue
        if isinstance(node, dict) and node.get("name"):
            found.setdefault(str(node["name"]), []).append((d.name, node))
    for members in found.values():
        members.sort(key=lambda m: int(m[1].get("index") or 0))
    return found


def names() -> list[str]:
    return sorted(_members())


def inspect(name: str, swarm: bool = True) -> Cluster:
    members = _members().get(name)
    if not members:
        raise NotFoundError(f"cluster '{name}' does not exist", hint="see 'pymachine cluster list'")
    cluster = Cluster(name=name, network=f"{SUBNET}.0/{PREFIX}")
    for node, cfg in members:
        try:
            state = machines.get(node).state
        except PymachineError:
            state = "unknown"
        cluster.nodes.append(ClusterNode(node, str(cfg.get("role")), str(cfg.get("address")), state))
    if swarm:
        _add_swarm_view(cluster)
    return cluster


def _add_swarm_view(cluster: Cluster) -> None:
    """Each node's status as the Swarm sees it, asked of the first running manager."""
    fmt = "{{json .}}"
    errors = []
    for manager in (n for n in cluster.managers if n.state == "running"):
        try:
            out = _run(manager.name, f"docker node ls --format '{fmt}'", timeout=90)
        except PymachineError as exc:
            errors.append(exc.message)
            continue
        seen = {}
        for line in out.splitlines():
            row = json.loads(line)
            seen[row.get("Hostname")] = {
                "status": row.get("Status"),
                "availability": row.get("Availability"),
                "manager_status": row.get("ManagerStatus") or None,
            }
        for node in cluster.nodes:
            node.swarm = seen.get(node.name)
        return
    cluster.swarm_error = "; ".join(errors) or "no manager node is running"


def list_clusters() -> list[Cluster]:
    return [inspect(n, swarm=False) for n in names()]


# -- images ------------------------------------------------------------------------------------------------
def load(name: str, tarball: str | Path, progress: Progress | None = None) -> dict[str, str]:
    """`docker load` the archive on every running node (no registry needed); node → dockerd's answer."""
    say = progress or (lambda _m: None)
    path = Path(tarball)
    if not path.is_file():
        raise UsageError(f"no such image archive: {path}")
    cluster = inspect(name, swarm=False)
    down = [n.name for n in cluster.nodes if n.state != "running"]
    if down:
        raise PymachineError(
            f"node(s) {', '.join(down)} of cluster '{name}' are not running: the image would miss there",
            hint=f"start them first: pymachine start {down[0]}",
        )
    results = {}
    for node in cluster.nodes:
        say(f"{node.name}: docker load < {path.name}")
        results[node.name] = _load_one(node.name, path)
    return results


def _load_one(node: str, path: Path, timeout: float = 600) -> str:
    client = ssh.connect(node)
    try:
        chan = client.get_transport().open_session(timeout=30)  # type: ignore[union-attr]
        chan.settimeout(timeout)
        chan.exec_command("docker load")
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                chan.sendall(chunk)
        chan.shutdown_write()
        out, err = _drain(chan)
        status = chan.recv_exit_status()
    finally:
        client.close()
    if status != 0:
        raise PymachineError(f"docker load on node {node} failed (exit {status}): {err.strip()[-400:]}")
    return out.strip()


def _drain(chan: paramiko.Channel) -> tuple[str, str]:
    out = err = b""
    while True:
        data = chan.recv(65536)
        if not data:
            break
        out += data
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(65536)
    return out.decode(errors="replace"), err.decode(errors="replace")


# -- remove ------------------------------------------------------------------------------------------------
def remove(name: str) -> list[str]:
    """Delete every node (running ones are forced off): VMs, disks, keys, host agents, docker contexts."""
    members = _members().get(name)
    if not members:
        raise NotFoundError(f"cluster '{name}' does not exist", hint="see 'pymachine cluster list'")
    removed, errors = [], []
    for node, _ in reversed(members):  # workers first: the manager goes last
        try:
            machines.delete(node, force=True)
            removed.append(node)
        except PymachineError as exc:
            errors.append(f"{node}: {exc.message}")
    if errors:
        raise PymachineError(f"could not delete every node of cluster '{name}': {'; '.join(errors)}")
    return removed
