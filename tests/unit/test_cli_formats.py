"""docker's conventions in the CLI: --format (JSON lines, Go templates, table), ps --filter, logs --since, the
exit codes of run, image references (docker-py's parser), docker-env per shell, the typed progress values."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from pymachine.app.cli import formats, render, shell_env
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.images_io import ImageRef, parse_reference, pull_events
from pymachine.hostvm.progress import ByteProgress, LayerProgress, StageProgress, stage_from_fields

pytestmark = pytest.mark.unit

ROWS = [
    {"ID": "abc123", "Names": "web", "Status": "Up 5 seconds", "Labels": {"a": "1"}},
    {"ID": "def456", "Names": "db", "Status": "Exited (0) 2 minutes ago", "Labels": {}},
]
COLS = [("CONTAINER ID", "ID"), ("NAMES", "Names"), ("STATUS", "Status")]


def test_format_json_is_json_lines() -> None:
    out = formats.format_rows(ROWS, COLS, "json")
    lines = out.splitlines()
    assert len(lines) == 2 and [json.loads(line) for line in lines] == ROWS
    assert formats.format_rows([], COLS, "json") == ""


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("{{.Names}}", "web\ndb"),
        ("{{.ID}}: {{.Names}}", "abc123: web\ndef456: db"),
        ("{{ .Names }}", "web\ndb"),
        ("{{upper .Names}}", "WEB\nDB"),
        ("{{.Names | upper}}", "WEB\nDB"),
        ("{{.Labels.a}}", "1\n<no value>"),
        ("{{json .Labels}}", '{"a":"1"}\n{}'),
        ("{{.Names}}\\t{{.ID}}", "web\tabc123\ndb\tdef456"),
    ],
)
def test_go_template_subset(fmt: str, expected: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1]["Labels"] = {} if "json" in fmt else {"b": "2"}
    if fmt == "{{.Labels.a}}":
        with pytest.raises(UsageError, match="can't evaluate field a"):
            formats.format_rows(rows, COLS, fmt)
        return
    assert formats.format_rows(rows, COLS, fmt) == expected


def test_json_dot_is_the_whole_row() -> None:
    out = formats.format_rows(ROWS, COLS, "{{json .}}")
    assert [json.loads(line) for line in out.splitlines()] == ROWS


def test_table_template_has_docker_headers_and_aligns() -> None:
    out = formats.format_rows(ROWS, COLS, "table {{.Names}}\\t{{.Status}}")
    assert out.splitlines() == [
        "NAMES   STATUS",
        "web     Up 5 seconds",
        "db      Exited (0) 2 minutes ago",
    ]


def test_unknown_template_action_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unsupported action"):
        formats.format_rows(ROWS, COLS, "{{range .Names}}")
    with pytest.raises(UsageError, match="can't evaluate field Nope"):
        formats.format_rows(ROWS, COLS, "{{.Nope}}")


def _attrs(name: str, status: str, code: int = 0, labels: dict | None = None, image: str = "busybox") -> dict:
    return {
        "Id": f"{name}0123456789",
        "Name": f"/{name}",
        "Image": "sha256:feedbeef",
        "State": {"Status": status, "ExitCode": code},
        "Config": {"Labels": labels or {}, "Image": image},
    }


def test_ps_filters_and_within_or_across() -> None:
    web = _attrs("web", "running", labels={"tier": "front"})
    db = _attrs("db", "exited", 3, labels={"tier": "back"}, image="pymachine/debian:bookworm")
    both = [web, db]

    def keep(*specs: str) -> list[str]:
        filters = formats.parse_filters(specs)
        return [a["Name"][1:] for a in both if formats.matches(a, filters)]

    assert keep("status=running") == ["web"]
    assert keep("status=running", "status=exited") == ["web", "db"]  # one key: OR
    assert keep("status=running", "label=tier=back") == []  # two keys: AND
    assert keep("label=tier") == ["web", "db"]
    assert keep("name=^d") == ["db"]
    assert keep("id=web01") == ["web"]
    assert keep("exited=3") == ["db"]
    assert keep("ancestor=busybox") == ["web"] and keep("ancestor=busybox:latest") == ["web"]
    assert keep("ancestor=feedbe") == ["web", "db"]
    with pytest.raises(UsageError, match="invalid filter"):
        formats.parse_filters(["colour=red"])


def test_logs_since_forms() -> None:
    now = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
    assert formats.parse_since("10m", now) == now - dt.timedelta(minutes=10)
    assert formats.parse_since("1h30m", now) == now - dt.timedelta(minutes=90)
    assert formats.parse_since("1733400000", now) == 1733400000.0
    assert formats.parse_since("2026-12-05T10:00:00Z", now) == dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)
    with pytest.raises(UsageError):
        formats.parse_since("yesterday", now)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('starting x: exec: "nope": executable file not found in $PATH', 127),
        ("failed to create task: exec: /app/run: no such file or directory", 127),
        ('exec: "/etc/passwd": permission denied: unknown', 126),
        ("exec: /tmp: is a directory", 126),
        ("host port 127.0.0.1:8080 is already in use", 125),
        ("No such image: nosuch/image", 125),
    ],
)
def test_run_exit_codes_as_docker(message: str, code: int) -> None:
    assert formats.run_exit_code(message) == code


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("busybox", ImageRef("busybox")),
        ("busybox:1.36", ImageRef("busybox", "1.36")),
        ("localhost:5000/app", ImageRef("localhost:5000/app")),
        ("localhost:5000/app:v1", ImageRef("localhost:5000/app", "v1")),
        ("reg.example:443/team/app:2", ImageRef("reg.example:443/team/app", "2")),
        ("app@sha256:" + "a" * 64, ImageRef("app", None, "sha256:" + "a" * 64)),
        (
            "localhost:5000/app:v1@sha256:" + "b" * 64,
            ImageRef("localhost:5000/app", "v1", "sha256:" + "b" * 64),
        ),
    ],
)
def test_reference_parsing_is_docker_pys(ref: str, parsed: ImageRef) -> None:
    assert parse_reference(ref) == parsed
    assert str(parsed) == ref


def test_reference_defaults_and_refusals() -> None:
    assert parse_reference("localhost:5000/app").pull_tag == "latest"
    assert parse_reference("localhost:5000/app").name == "localhost:5000/app:latest"
    digest = "sha256:" + "c" * 64
    assert parse_reference(f"app@{digest}").pull_tag == digest
    for bad in ("", "App:1", "a b", "app/"):
        with pytest.raises(UsageError, match="invalid reference format"):
            parse_reference(bad)


def test_pull_stream_becomes_layer_progress() -> None:
    seen: list[object] = []
    stream = [
        {"status": "Pulling from app", "id": "v1"},
        {"status": "Pulling fs layer", "id": "aaa"},
        {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 500, "total": 1000}},
        {"status": "Pull complete", "id": "aaa"},
        {"status": "Digest: sha256:x"},
        {"status": "Status: Downloaded newer image for app:v1"},
    ]
    pull_events(stream, "app:v1", seen.append)
    layers = [v for v in seen if isinstance(v, LayerProgress)]
    assert layers == [
        LayerProgress("aaa", "Pulling fs layer"),
        LayerProgress("aaa", "Downloading", 500, 1000),
        LayerProgress("aaa", "Pull complete"),
    ]
    assert layers[-1].finished and not layers[1].finished
    assert "Status: Downloaded newer image for app:v1" in seen


def test_stage_values_round_trip_through_event_fields() -> None:
    value = StageProgress(3, 5, "ssh auth", "done", 1.25, "start")
    assert stage_from_fields(value.to_fields()) == value
    assert str(value) == "stage 3 of 5: ssh auth: ok (1.2 s)"
    assert stage_from_fields({"stage": "old writer", "message": "stage 1 of 5"}) is None


def test_plain_renderer_prints_changes_not_every_byte(capsys: pytest.CaptureFixture[str]) -> None:
    plain = render.Plain()
    for current in range(0, 1001, 50):
        plain(LayerProgress("aaa", "Downloading", current, 1000))
        plain(ByteProgress("load", "x.tar", current, 1000))
    plain(LayerProgress("aaa", "Pull complete"))
    lines = capsys.readouterr().err.splitlines()
    assert lines.count("aaa: Downloading") == 1 and lines[-1] == "aaa: Pull complete"
    assert len([line for line in lines if line.startswith("load x.tar")]) == 11  # every tenth, and the end


def test_docker_env_per_shell() -> None:
    host = "unix:///home/a b/m/dev/docker.sock"
    bash = shell_env.render("bash", host, "dev")
    out = subprocess.run(
        ["bash", "-c", f'eval "$(cat <<\'EOF\'\n{bash}\nEOF\n)"; echo "$DOCKER_HOST"'],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == host
    assert shell_env.render("bash", "", "dev", unset=True).splitlines()[0] == "unset DOCKER_HOST"
    assert shell_env.render("fish", host, "dev").splitlines()[0] == f"set -gx DOCKER_HOST '{host}';"
    assert shell_env.render("fish", "", "dev", True).startswith("set -e DOCKER_HOST;")
    assert shell_env.render("powershell", host, "dev").splitlines()[0] == f"$Env:DOCKER_HOST = '{host}'"
    assert shell_env.render("powershell", "", "dev", True).startswith("Remove-Item Env:\\DOCKER_HOST")
    assert shell_env.render("cmd", host, "dev").splitlines()[0] == f"SET DOCKER_HOST={host}"
    assert shell_env.render("cmd", "", "dev", True).startswith("SET DOCKER_HOST=\n")
    assert shell_env.detect({"SHELL": "/usr/bin/fish"}, "linux") == "fish"
    assert shell_env.detect({"PSModulePath": "x"}, "win32") == "powershell"


def _cli(*args: str, home: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYMACHINE_HOME": home}
    env.pop("PYMACHINE_MACHINE", None)
    return subprocess.run(
        [sys.executable, "-m", "pymachine.app.cli", *args], capture_output=True, text=True, env=env
    )


def _home_with_machine(tmp_path) -> tuple[str, object]:
    """A PYMACHINE_HOME holding machine `devbox` as `list` sees it (its config; no disk, no VM)."""
    cfg = cfgmod.build("devbox", 1, "512M", "8G", "qemu", None, ncpus_host=2, fallback_driver="qemu")
    machine_dir = tmp_path / "m" / "devbox"
    machine_dir.mkdir(parents=True)
    (machine_dir / "config.json").write_text(json.dumps(cfg.to_json()))
    return str(tmp_path), machine_dir


def test_bash_completion_completes_verbs_options_and_machines(tmp_path) -> None:
    home, _ = _home_with_machine(tmp_path)
    assert _cli("list", "-q", home=home).stdout == "devbox\n"  # a machine as `list` sees it
    script = _cli("completion", "bash", home=home).stdout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pymachine").write_text(f'#!/bin/sh\nexec {sys.executable} -m pymachine.app.cli "$@"\n')
    (bin_dir / "pymachine").chmod(0o755)

    def complete(*words: str) -> list[str]:
        words_arr = " ".join(f"'{w}'" for w in words)
        prog = (
            f"{script}\nCOMP_WORDS=({words_arr}); COMP_CWORD={len(words) - 1}; _pymachine; "
            + 'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        env = {**os.environ, "PYMACHINE_HOME": home, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        return subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env).stdout.split()

    assert complete("pymachine", "st") == ["start", "stop"]
    assert "--filter" in complete("pymachine", "ps", "--f")
    assert complete("pymachine", "start", "dev") == ["devbox"]
    assert complete("pymachine", "--machine", "d") == ["devbox"]
    assert complete("pymachine", "completion", "") == ["bash", "zsh", "fish"]


def test_ssh_config_is_read_by_openssh_with_the_pin(tmp_path) -> None:
    """`pymachine ssh-config NAME`: OpenSSH itself (`ssh -G`) reads the block as pymachine ssh connects."""
    home, machine_dir = _home_with_machine(tmp_path)
    (machine_dir / "state.json").write_text(json.dumps({"ssh_port": 42222}))
    subprocess.run(
        [sys.executable, "-c", "from pymachine.hostvm import ssh; ssh.create_keys('devbox')"],
        env={**os.environ, "PYMACHINE_HOME": home},
        check=True,
    )
    out = _cli("ssh-config", "devbox", home=home)
    assert out.returncode == 0, out.stderr
    conf = tmp_path / "ssh_config"
    conf.write_text(out.stdout)
    seen = subprocess.run(["ssh", "-G", "-F", str(conf), "pymachine-devbox"], capture_output=True, text=True)
    options = dict(line.split(" ", 1) for line in seen.stdout.splitlines() if " " in line)
    assert options["hostname"] == "127.0.0.1" and options["port"] == "42222" and options["user"] == "root"
    assert options["stricthostkeychecking"] == "true"
    assert options["hostkeyalias"] == "pymachine-devbox"
    assert options["userknownhostsfile"] == str(machine_dir / "known_hosts")
    assert options["forwardagent"] == "no" and options["identityagent"] == "none"
    missing = _cli("ssh-config", "nosuch", home=home)
    assert missing.returncode == 1 and "hint:" in missing.stderr


def test_live_renderer_draws_stages_and_notes() -> None:
    import io

    buf = io.StringIO()
    live = render.Live(buf)
    live(StageProgress(1, 2, "domain up"))
    live(StageProgress(1, 2, "domain up", "done", 1.5))
    live(StageProgress(2, 2, "ssh banner"))
    live(StageProgress(2, 2, "ssh banner", "failed", 3.0))
    live("a note")
    live.close()
    out = buf.getvalue()
    assert "a note" in out
    assert "start 1/2: domain up: ok (1.5 s)" in out and "start 2/2: ssh banner: FAILED (3.0 s)" in out
