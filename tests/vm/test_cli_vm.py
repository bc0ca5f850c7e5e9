"""The CLI's docker conventions on a real machine, through its host agent: `run -it`/`exec -it` see the
terminal's size (pymachine's CLI and the real docker CLI, each on a real pty), run's exit codes, --pull never,
`--format json`, ssh-config read by OpenSSH, and `version` naming the engine."""

# ruff: noqa: F811 - the fixtures come in by import, under the names the tests take
from __future__ import annotations

import json
import subprocess
import sys

from support.hostagent_vm import VmMachine
from support.pty_session import pty_session

B = "pymachine/busybox"


def _pymachine_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pymachine.app.cli", *args]


def test_run_it_sees_the_terminal_size_pymachine_and_docker(ha_vm: VmMachine) -> None:
    code, out = pty_session(
        _pymachine_argv("run", "--machine", ha_vm.name, "--rm", "-it", B, "stty", "size"),
        ha_vm.env,
        41,
        133,
        lambda fd, o: None,
    )
    assert code == 0, out
    assert b"41 133" in out, out
    docker = ["docker", "--context", f"pymachine-{ha_vm.name}", "run", "--rm", "-it", B, "stty", "size"]
    code, out = pty_session(docker, ha_vm.env, 27, 95, lambda fd, o: None)
    assert code == 0, out
    assert b"27 95" in out, out


def test_exec_it_sees_the_terminal_size(ha_vm: VmMachine) -> None:
    ha_vm.pymachine("run", "--machine", ha_vm.name, "-d", "--name", "sleeper", B, "sleep", "300")
    code, out = pty_session(
        _pymachine_argv("exec", "--machine", ha_vm.name, "-it", "sleeper", "stty", "size"),
        ha_vm.env,
        22,
        66,
        lambda fd, o: None,
    )
    assert code == 0, out
    assert b"22 66" in out, out


def test_run_exit_codes_and_pull_never(ha_vm: VmMachine) -> None:
    missing = ha_vm.pymachine("run", "--machine", ha_vm.name, "--rm", B, "no-such-command", check=False)
    assert missing.returncode == 127, missing.stderr
    assert "executable file not found" in missing.stderr
    not_exec = ha_vm.pymachine("run", "--machine", ha_vm.name, "--rm", B, "/etc/passwd", check=False)
    assert not_exec.returncode == 126, not_exec.stderr
    own = ha_vm.pymachine("run", "--machine", ha_vm.name, "--rm", B, "sh", "-c", "exit 9", check=False)
    assert own.returncode == 9
    never = ha_vm.pymachine(
        "run", "--machine", ha_vm.name, "--pull", "never", "--rm", "nosuch/img:1", check=False
    )
    assert never.returncode == 125 and "No such image" in never.stderr and "hint:" in never.stderr
    missing_exec = ha_vm.pymachine("exec", "--machine", ha_vm.name, "nosuch", "true", check=False)
    assert missing_exec.returncode == 1 and "No such container" in missing_exec.stderr


def test_ps_json_lines_template_quiet_and_filter(ha_vm: VmMachine) -> None:
    ha_vm.pymachine("run", "--machine", ha_vm.name, "-d", "--name", "alpha", B, "sleep", "300")
    ha_vm.pymachine("run", "--machine", ha_vm.name, "--name", "beta", B, "true")
    ps = lambda *a: ha_vm.pymachine("ps", "--machine", ha_vm.name, *a).stdout  # noqa: E731
    rows = [json.loads(line) for line in ps("-a", "--format", "json").splitlines()]
    assert {r["Names"] for r in rows} >= {"alpha", "beta"} and all(isinstance(r, dict) for r in rows)
    assert ps("--format", "{{.Names}}").split() == ["alpha"]
    assert ps("-a", "--filter", "status=exited", "--format", "{{.Names}} {{.State}}").strip() == "beta exited"
    alpha_id = next(r["ID"] for r in rows if r["Names"] == "alpha")
    assert ps("-a", "-q", "--filter", "name=alpha").split() == [alpha_id]
    header = ps("--format", "table {{.Names}}\\t{{.Image}}").splitlines()[0]
    assert header.split() == ["NAMES", "IMAGE"]
    ha_vm.pymachine("run", "--machine", ha_vm.name, "--name", "gamma", B, "sh", "-c", "echo one; echo two")
    logs = ha_vm.pymachine("logs", "--machine", ha_vm.name, "-t", "--tail", "1", "gamma").stdout.splitlines()
    assert len(logs) == 1 and logs[0].endswith(" two") and logs[0].startswith("20")  # RFC 3339 time first
    recent = ha_vm.pymachine("logs", "--machine", ha_vm.name, "--since", "1h", "gamma").stdout
    assert recent.split() == ["one", "two"]


def test_ssh_config_works_with_openssh(ha_vm: VmMachine, tmp_path) -> None:
    conf = tmp_path / "config"
    conf.write_text(ha_vm.pymachine("ssh-config", ha_vm.name).stdout)
    out = subprocess.run(
        ["ssh", "-F", str(conf), f"pymachine-{ha_vm.name}", "echo", "via-ssh-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "via-ssh-config"


def test_version_names_the_engine(ha_vm: VmMachine) -> None:
    info = json.loads(ha_vm.pymachine("version", "--machine", ha_vm.name, "--format", "json").stdout)
    assert info["engine"]["api_version"] == "1.44" and info["engine"]["version"] == info["agent_version"]
    assert info["engine_error"] is None


def test_host_agent_wrote_its_start_up_stages(ha_vm: VmMachine) -> None:
    """The host agent's events file holds its own start-up steps as typed stage values, each running then
    done, in order: what `start` and the app show for its last stage."""
    from pymachine.hostvm import paths
    from pymachine.hostvm.hostagent.events import read_events
    from pymachine.hostvm.progress import stage_from_fields

    events, _ = read_events(paths.machine(ha_vm.name).events)
    stages = [stage_from_fields(e.fields) for e in events if e.type == "stage"]
    done = [s.name for s in stages if s is not None and s.state == "done"]
    assert done[:3] == ["engine socket", "ssh link", "guest agent"], stages
    assert all(s is not None and s.source == "host agent" and s.total == 3 for s in stages)
