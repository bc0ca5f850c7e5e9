"""`pymachine --version`, `pymachine version`, the grouped `--help`, and the default machine's sources."""

import json
import os
import subprocess
import sys

import pytest

from pymachine.app.cli import main as climain
from pymachine.hostvm import image

pytestmark = pytest.mark.unit


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_dash_dash_version_names_client_agent_and_recipe() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pymachine 0.")
    assert image.recipe_hash()[:12] in result.stdout
    assert "API 1.44" in result.stdout


def test_version_json_without_a_machine_says_why_the_engine_is_missing(tmp_path) -> None:
    result = run_cli("version", "--format", "json", env={"PYMACHINE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["guest_image_recipe"] == image.recipe_hash()
    assert info["api_version"] == "1.44"
    assert info["agent_version"]
    assert info["engine"] is None
    assert "does not exist" in info["engine_error"]


def test_default_machine_from_env_and_global_flag() -> None:
    assert climain.default_machine(["ps"]) in ("default", os.environ.get("PYMACHINE_MACHINE"))
    assert climain.default_machine(["--machine", "dev", "ps"]) == "dev"
    assert climain.default_machine(["--machine=dev", "ps"]) == "dev"
    # a --machine after the verb is that verb's own option, not the global one
    assert climain.default_machine(["ps", "--machine", "x"]) != "x"
    parser = climain.build_parser("dev")
    assert parser.parse_args(["ps"]).machine == "dev"
    assert parser.parse_args(["start"]).name == "dev"
    assert parser.parse_args(["ps", "--machine", "other"]).machine == "other"
    assert parser.parse_args(["container", "logs", "c1"]).machine == "dev"


def test_env_machine_reaches_the_verb(tmp_path) -> None:
    result = run_cli(
        "version", "--format", "json", env={"PYMACHINE_HOME": str(tmp_path), "PYMACHINE_MACHINE": "devbox"}
    )
    assert json.loads(result.stdout)["machine"] == "devbox"


def test_help_is_grouped_with_examples() -> None:
    out = run_cli("--help").stdout
    machines, containers, images = out.index("machines:"), out.index("containers:"), out.index("images:")
    assert machines < out.index("  create ") < containers < out.index("  run ")
    assert containers < images < out.index("  pull ")
    assert "examples:" in out and "pymachine run --rm -it" in out
