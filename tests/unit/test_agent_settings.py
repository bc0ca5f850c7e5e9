"""agent.json (from the seed) → the agent's settings: found through $PYMACHINE_SEED, validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymachine_agent.__main__ import read_settings


def test_settings_come_from_the_seed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "agent.json").write_text(
        json.dumps({"machine": "m", "insecure_registries": ["reg.lan:5000"]})
    )
    monkeypatch.setenv("PYMACHINE_SEED", str(tmp_path))
    assert read_settings(None)["insecure_registries"] == ["reg.lan:5000"]
    monkeypatch.delenv("PYMACHINE_SEED")
    assert read_settings(None) == {}
    assert read_settings(tmp_path / "absent.json") == {}


@pytest.mark.parametrize(
    "text", ['["x"]', '{"insecure_registries": "reg.lan"}', '{"insecure_registries": [1]}']
)
def test_malformed_settings_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "agent.json").write_text(text)
    with pytest.raises(ValueError, match="agent.json"):
        read_settings(tmp_path / "agent.json")
