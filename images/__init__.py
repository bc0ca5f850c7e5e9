"""Recipes for the guest VM image and the small base container images (data, read by pymachine.hostvm)."""

from pathlib import Path

RECIPES = Path(__file__).resolve().parent
GUEST_RECIPE = RECIPES / "guest"
CONTAINER_RECIPES = RECIPES / "containers"
