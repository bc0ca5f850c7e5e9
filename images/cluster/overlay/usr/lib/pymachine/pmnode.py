"""Cluster node init: the default guest init (pminit.py) with two changes, made here so that the default
image stays byte-for-byte what it was.

* The supervised engine is Debian's dockerd (moby with swarmkit; engine.sh starts it on its containerd)
  instead of the guest agent, on the same socket the host agent forwards (/run/pymachine/docker.sock) and on
  /var/run/docker.sock for the `docker` CLI inside the node. pminit's respawn loop and back-off apply to it
  unchanged.
* The second NIC (eth1, QEMU's multicast socket netdev shared by the cluster's VMs only) gets the node's
  private address from the seed (agent.json `cluster.address`). Swarm's control plane (2377), gossip (7946)
  and overlay VXLAN (4789) run there; eth0 stays the restricted user-mode network for SSH.
"""

from __future__ import annotations

import os
import time

import pminit

DOCKERD_LOG = "/var/log/dockerd.log"
# containerd, then dockerd (--iptables, the default, for the routing mesh's DNAT): see engine.sh
DOCKERD_ARGV = ["/bin/sh", "/usr/lib/pymachine/engine.sh"]
# The routing mesh (IPVS) and the overlay network (VXLAN); modprobe would load them
# on demand too, but dockerd checks some of them up front.
SWARM_MODULES = ["ip_vs", "ip_vs_rr", "xt_ipvs", "vxlan", "xt_mark", "nf_conntrack_netlink"]


@pminit.step
def cluster_network() -> None:
    import json

    settings = json.loads(pminit._seed_file("agent.json") or b"{}")
    address = (settings.get("cluster") or {}).get("address")
    if not address:
        pminit.say("no cluster address in the seed: eth1 stays down")
        return
    for _ in range(300):
        if os.path.exists("/sys/class/net/eth1"):
            break
        time.sleep(0.01)
    script = f"link set eth1 up\naddr add {address} dev eth1\n".encode()
    if pminit.run(["/usr/sbin/ip", "-batch", "-"], script) != 0:
        pminit.say(f"could not give eth1 the cluster address {address}")


_default_network = pminit.network


def network() -> None:
    _default_network()
    cluster_network()


def main() -> None:
    pminit.AGENT_ARGV = DOCKERD_ARGV
    pminit.AGENT_LOG = DOCKERD_LOG
    pminit.ENGINE_MODULES = [*pminit.ENGINE_MODULES, *SWARM_MODULES]
    pminit.network = network  # main() looks the step up by name
    pminit.main()
