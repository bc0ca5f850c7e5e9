"""Pure parts of the runtime: limit translation, restart decisions, capability masks, user resolution, the
json-file writer and reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymachine_agent.runtime import capabilities, user
from pymachine_agent.runtime.cgroups import limit_files, shares_to_weight
from pymachine_agent.runtime.logs import JsonFileWriter, parse_time, read_logs, rfc3339nano
from pymachine_agent.runtime.monitor import should_restart, should_start_at_boot
from pymachine_agent.runtime.mounts import secure_join
from pymachine_agent.runtime.process import DEFAULT_PATH, build_env
from pymachine_agent.runtime.spec import ContainerSpec, Limits, Mount, RestartPolicy


def test_cpu_shares_conversion_matches_runc() -> None:
    assert [shares_to_weight(s) for s in (2, 1024, 262144, 0)] == [1, 100, 10000, 0]


def test_limit_files() -> None:
    files = limit_files(Limits(memory=64 << 20, nano_cpus=1_500_000_000, cpu_shares=512, pids_limit=50))
    assert files["memory.max"] == str(64 << 20)
    assert files["memory.swap.max"] == str(64 << 20)  # Docker: as much swap as memory by default
    assert files["cpu.max"] == "150000 100000"
    assert files["cpu.weight"] == str(shares_to_weight(512))
    assert files["pids.max"] == "50"
    unlimited = limit_files(Limits())
    assert (unlimited["memory.max"], unlimited["cpu.max"], unlimited["pids.max"]) == (
        "max",
        "max 100000",
        "max",
    )
    assert limit_files(Limits(memory=100, memory_swap=300))["memory.swap.max"] == "200"
    assert limit_files(Limits(memory=100, memory_swap=-1))["memory.swap.max"] == "max"


@pytest.mark.parametrize(
    ("policy", "code", "stopped", "count", "want"),
    [
        (RestartPolicy("no"), 1, False, 0, False),
        (RestartPolicy("always"), 0, False, 5, True),
        (RestartPolicy("always"), 0, True, 0, False),
        (RestartPolicy("unless-stopped"), 0, False, 0, True),
        (RestartPolicy("on-failure"), 0, False, 0, False),
        (RestartPolicy("on-failure"), 2, False, 100, True),
        (RestartPolicy("on-failure", 3), 2, False, 2, True),
        (RestartPolicy("on-failure", 3), 2, False, 3, False),
    ],
)
def test_restart_decision(policy: RestartPolicy, code: int, stopped: bool, count: int, want: bool) -> None:
    assert should_restart(policy, code, stopped, count) is want


def test_start_at_boot_like_dockerd() -> None:
    assert should_start_at_boot(RestartPolicy("always"), manually_stopped=True)
    assert not should_start_at_boot(RestartPolicy("unless-stopped"), manually_stopped=True)
    assert should_start_at_boot(RestartPolicy("unless-stopped"), manually_stopped=False)
    assert not should_start_at_boot(RestartPolicy("on-failure"), manually_stopped=False)


def test_capability_masks() -> None:
    assert capabilities.resolve([], []) == 0xA80425FB
    assert len(capabilities.names(0xA80425FB)) == 14
    assert capabilities.resolve(["CAP_SYS_ADMIN"], ["ALL"]) == 1 << 21
    with pytest.raises(ValueError, match="unknown capability"):
        capabilities.resolve(["NOPE"], [])


def test_user_resolution(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nwww:x:33:\nextra:x:77:web\n")
    assert user.resolve("", tmp_path) == user.ExecUser(0, 0, [], "/root")
    assert user.resolve("web", tmp_path) == user.ExecUser(33, 33, [77], "/var/www")
    assert user.resolve("33:extra", tmp_path) == user.ExecUser(33, 77, [], "/var/www")
    assert user.resolve("4000", tmp_path) == user.ExecUser(4000, 0, [], "/")
    with pytest.raises(LookupError, match="unable to find user nobody"):
        user.resolve("nobody", tmp_path)


def test_env_defaults() -> None:
    env = build_env(["A=1", "PATH=/x"], ["A=2"], "/home/u", "h", tty=True)
    assert env == ["HOSTNAME=h", "A=2", "PATH=/x", "TERM=xterm", "HOME=/home/u"]


def test_env_bare_key_unsets_it() -> None:
    # Config.Env keeps a bare `A` as the client sent it; the process must not get `A=` (dockerd unsets it)
    assert build_env(["A=1", "B=2"], ["A"], "/", "", tty=False) == ["B=2", "PATH=" + DEFAULT_PATH, "HOME=/"]


def test_secure_join_keeps_symlinks_inside(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "escape").symlink_to("/etc")
    (tmp_path / "up").symlink_to("../../../../tmp")
    assert secure_join(str(tmp_path), "/escape/passwd") == str(tmp_path / "etc/passwd")
    assert secure_join(str(tmp_path), "/up/x") == str(tmp_path / "tmp/x")
    assert secure_join(str(tmp_path), "/../../a") == str(tmp_path / "a")


def test_json_file_writer_and_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "c.log")
    w = JsonFileWriter(path, max_size=20000, max_file=2)
    w.write("stdout", b"a\nb")
    w.write("stderr", b"err\n")
    w.write("stdout", b"c\n" + b"x" * 20000)
    w.close()
    records = [json.loads(line) for line in Path(path + ".1").read_text().splitlines()]
    assert Path(path).stat().st_size == 0  # rotated once the file passed 20000 bytes
    assert [(r["stream"], r["log"]) for r in records] == [
        ("stdout", "a\n"), ("stderr", "err\n"), ("stdout", "bc\n"),  # a partial line waits for its newline
        ("stdout", "x" * 16384), ("stdout", "x" * (20000 - 16384)),  # 16 KiB split; tail at close
    ]  # fmt: skip
    entries = list(read_logs(path, stderr=False))
    assert entries[-1].data == b"x" * (20000 - 16384)
    assert all(e.stream == "stdout" for e in entries)


def test_time_format_round_trips() -> None:
    stamp = rfc3339nano(1_700_000_000_123_456_789)
    assert stamp == "2023-11-14T22:13:20.123456789Z"
    assert abs(parse_time(stamp) - 1_700_000_000.123456789) < 1e-6


def test_spec_json_round_trip() -> None:
    spec = ContainerSpec(id="a" * 64, name="n", layers=["/l"], argv=["x"], mounts=[Mount("tmpfs", "/t")],
                         limits=Limits(memory=5), restart_policy=RestartPolicy("always"))  # fmt: skip
    assert ContainerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
