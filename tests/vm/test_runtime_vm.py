"""Runtime limits in a real guest (pure cgroup v2): OOM kill reported as OOMKilled, pids limit, cpu quota,
restart policy, stats, update, freeze. The host's cgroups are hybrid v1, so these can only be proven here.

One plain-QEMU boot (tests/support/guestboot.py) per module; the guest-side scenarios live in
tests/support/runtime_guest.py and report what they saw as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.guestboot import boot_guest

from pymachine.hostvm import image

SUPPORT = Path(__file__).resolve().parent.parent / "support"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("PYMACHINE_CACHE", os.environ.get("PYMACHINE_TEST_CACHE", "/var/tmp/pymachine-test-cache"))
    try:
        manifest = image.ensure_image()
    finally:
        mp.undo()
    # A generous boot timeout: under TCG on a busy 2-core host sshd can take minutes to answer.
    with boot_guest(
        manifest, tmp_path_factory.mktemp("rtvm"), memory_mib=1024, cpus=2, boot_timeout=900
    ) as guest:
        sftp = guest.ssh().open_sftp()
        sftp.mkdir("/root/rt")
        sftp.put(str(SUPPORT / "runtime_guest.py"), "/root/rt/runtime_guest.py")
        sftp.put("/bin/busybox", "/root/rt/busybox")
        sftp.chmod("/root/rt/busybox", 0o755)
        sftp.close()
        res = guest.run("python3 /root/rt/runtime_guest.py /root/rt/busybox /root/rt/work", timeout=1200)
        assert res.status == 0, f"guest script failed: {res.stderr[-3000:]}"
        return json.loads(res.stdout.strip().splitlines()[-1])


def scenario(results: dict, name: str) -> dict:
    got = results[name]
    assert "error" not in got, got.get("error")
    return got


def test_memory_limit_oom_kill_is_reported(results: dict) -> None:
    got = scenario(results, "oom")
    assert got["memory_max"] == str(48 * 1024 * 1024)
    assert (got["exit_code"], got["oom_killed"]) == (137, True)


def test_pids_limit_stops_forks(results: dict) -> None:
    got = scenario(results, "pids")
    limited, unlimited = got["limited"], got["unlimited"]
    # The shell cannot fork its 10th process and gives up; without the limit all 30 sleeps start.
    assert limited["output"][0] == "10"
    assert limited["exit_code"] != 0 and any("can't fork" in line for line in limited["output"]), limited
    assert unlimited["output"][0] == "max"
    assert unlimited["exit_code"] == 0 and int(unlimited["output"][-1]) >= 31, unlimited


def test_cpu_quota_throttles(results: dict) -> None:
    got = scenario(results, "cpu")
    assert got["cpu_max"] == "25000 100000"
    assert got["throttled"] > 0 and got["stats_throttled_periods"] > 0
    assert got["usage_share"] < 0.5  # a busy loop limited to a quarter CPU (generous bound)


def test_restart_policy_on_failure(results: dict) -> None:
    got = scenario(results, "restart")
    assert got == {"restart_count": 2, "status": "exited", "exit_code": 3, "runs": 3}


def test_private_cgroup_namespace_stats_update_and_freeze(results: dict) -> None:
    got = scenario(results, "live")
    assert got["cgroup"] == "0::/"
    assert got["stats_memory_limit"] == 64 * 1024 * 1024
    assert got["stats_memory_usage"] > 0 and got["stats_pids"] >= 1
    assert got["memory_after_update"] == str(96 * 1024 * 1024)
    assert "frozen 1" in got["frozen_events"] and got["paused_status"] == "paused"
    assert "frozen 0" in got["thawed_events"]
    assert got["top"] == 1
    assert got["cgroup_removed"]


def test_cpu_weight_reservation_cpuset(results: dict) -> None:
    got = scenario(results, "weights")
    assert got["cpu.weight"] == "59"  # runc's conversion of 512 shares
    assert got["memory.low"] == str(16 * 1024 * 1024)
    assert got["cpuset.cpus"] == "0"
    assert got["io.weight"] in ("absent", "default 4950")  # io controller only where the disk supports it


def test_container_survives_agent_kill_9_in_the_guest(results: dict) -> None:
    got = scenario(results, "survive")
    assert got["agent_said"] == "started"
    assert got["status_after_reattach"] == "running" and got["cgroup_procs"] >= 1
    assert got["exec"] == "inside"
    assert (got["status_after_stop"], got["exit_code"], got["logs"]) == ("exited", 7, "up\n")
