import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymachine.app.cli", *args], capture_output=True, text=True)


def test_unknown_subcommand_is_one_clear_line() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown command 'frobnicate'\n")
    assert "hint: run 'pymachine --help'" in result.stderr


def test_help_lists_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "COMMAND" in result.stdout
