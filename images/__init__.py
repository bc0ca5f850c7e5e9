"""Recipes for the guest VM image and the small base container images (data, read by pymachine.hostvm)."""

from pathlib import Path

RECIPES = Path(__file__).resolve().parent
GUEST_RECIPE = RECIPES / "guest"
CONTAINER_RECIPES = RECIPES / "containers"
# A variant of the guest image: extra Debian packages and overlay files on top of GUEST_RECIPE (cluster nodes
# run Debian's dockerd instead of the guest agent: docs/cluster.md).
CLUSTER_RECIPE = RECIPES / "cluster"
VARIANTS = (CLUSTER_RECIPE,)
