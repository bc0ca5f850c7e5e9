"""Operator and test overrides of the NetworkManager's names and subnets, from the environment."""

from __future__ import annotations

import json
import os
from typing import Any

from .model import InvalidParameterError

ENV_OPTIONS = "PYMACHINE_AGENT_NETWORK"
_ENV_KEYS = {
    "default_subnet",
    "default_bridge",
    "bridge_prefix",
    "veth_prefix",
    "nft_table",
    "port_mode",
    "address_pools",
}


def env_options() -> dict[str, Any]:
    """Operator/test overrides: PYMACHINE_AGENT_NETWORK='{"nft_table": "pm_t1", "default_subnet": ...}'.

    They win over the constructor's arguments, so an agent started by a test on a shared host can get its own
    bridge, subnet and nft table without code changes in the engine."""
    raw = os.environ.get(ENV_OPTIONS, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameterError(f"{ENV_OPTIONS} is not JSON: {exc}") from None
    unknown = set(data) - _ENV_KEYS if isinstance(data, dict) else {"<not an object>"}
    if unknown:
        raise InvalidParameterError(
            f"{ENV_OPTIONS}: unknown keys {sorted(unknown)}; known: {sorted(_ENV_KEYS)}"
        )
    return data
