"""`pymachine cluster create|list|inspect|load|rm`: Swarm clusters of machines. Rendering only: the logic
lives in `pymachine.hostvm.cluster`."""

from __future__ import annotations

import argparse
import json

from pymachine.app.cli import render
from pymachine.app.cli.machine_cmd import render_table
from pymachine.hostvm import cluster


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="Swarm clusters of machines: cluster create|list|inspect|load|rm")
    verbs = p.add_subparsers(dest="cluster_verb", required=True, metavar="create|list|inspect|load|rm")

    v = verbs.add_parser("create", help="N machines on a private network, running dockerd, joined in a Swarm")
    v.add_argument("name")
    v.add_argument("--nodes", type=int, default=2, help="how many machines (default 2)")
    v.add_argument("--managers", type=int, default=1, help="how many of them are Swarm managers (default 1)")
    v.add_argument("--cpus", default="1", help="virtual CPUs per node (default 1)")
    v.add_argument("--memory", help="memory per node, e.g. 1G (default: Settings, else 1G)")
    v.add_argument("--disk", help="disk size per node, e.g. 8G")
    v.add_argument("--driver", help="libvirt or qemu (default: libvirt if libvirt-python is there)")
    v.add_argument("--connect", metavar="URI", help="libvirt URI")
    v.set_defaults(func=_create)

    v = verbs.add_parser("list", help="the clusters and their nodes' states")
    v.add_argument("--format", choices=("table", "json"), default="table")
    v.set_defaults(func=_list)

    v = verbs.add_parser("inspect", help="a cluster's nodes, as the machines and the Swarm see them (JSON)")
    v.add_argument("name")
    v.set_defaults(func=_inspect)

    v = verbs.add_parser("load", help="docker load an image archive on every node (no registry needed)")
    v.add_argument("name")
    v.add_argument("tarball", metavar="TARBALL", help="an archive from 'docker save'")
    v.set_defaults(func=_load)

    v = verbs.add_parser("rm", help="delete every node of a cluster (running ones are forced off)")
    v.add_argument("name")
    v.set_defaults(func=_rm)


def _create(args: argparse.Namespace) -> int:
    c = cluster.create(
        args.name,
        args.nodes,
        args.managers,
        cpus=args.cpus,
        memory=args.memory,
        disk=args.disk,
        driver=args.driver,
        connect=args.connect,
        progress=render.progress,
    )
    render.finish()
    print(f"created cluster '{c.name}': {len(c.nodes)} node(s), {len(c.managers)} manager(s)")
    print(f'point docker at its manager: eval "$(pymachine docker-env {c.name})"')
    return 0


def _list(args: argparse.Namespace) -> int:
    found = cluster.list_clusters()
    if args.format == "json":
        for c in found:
            print(json.dumps(c.to_json()))
        return 0
    rows = [("NAME", "NODES", "MANAGERS", "RUNNING")]
    for c in found:
        running = sum(n.state == "running" for n in c.nodes)
        rows.append(
            (c.name, " ".join(n.name for n in c.nodes), str(len(c.managers)), f"{running}/{len(c.nodes)}")
        )
    print(render_table(rows))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    print(json.dumps(cluster.inspect(args.name).to_json(), indent=2))
    return 0


def _load(args: argparse.Namespace) -> int:
    for node, answer in cluster.load(args.name, args.tarball, render.progress).items():
        render.finish()
        print(f"{node}: {answer}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed = cluster.remove(args.name)
    print(f"deleted cluster '{args.name}' ({', '.join(removed)})")
    return 0
