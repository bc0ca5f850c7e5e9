"""Helpers shared by the test tiers (fixtures that start real services: a registry, a guest agent, a VM)."""

from __future__ import annotations

import os
from pathlib import Path

# What the tiers build once and share, keyed by recipe or source hash, between tests, sessions and CI runs on
# this machine: the guest image, container images, static helpers.
SHARED_CACHE = Path(os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
