"""`pymachine set` on a real machine, in one boot: CPUs, memory and disk set while it is stopped are what the
guest sees after its start (`nproc`, `free`, `df` after the guest's online resize2fs); a change made while it
runs is pending (inspect, list) and its stop shuts it down rather than saving a state that would skip it."""

from __future__ import annotations

import contextlib
import json
import shutil
import time

from support.machines import cli, home_env, new_home, unique_name

from pymachine.hostvm import machines, ssh
from pymachine.hostvm.config import GiB

MiB = 1024**2


def _guest(name: str, command: str) -> str:
    status, out, err = ssh.run(name, command)
    assert status == 0, err
    return out.decode()


def test_set_applies_at_the_next_start_and_is_pending_while_running() -> None:
    home, name = new_home(), unique_name("set")
    try:
        assert (
            cli(
                home, "create", name, "--cpus", "1", "--memory", "1G", "--disk", "8G", "--no-home-mount"
            ).returncode
            == 0
        )
        result = cli(home, "set", name, "--cpus", "2", "--memory", "1536M", "--disk", "10G")
        assert result.returncode == 0, result.stderr
        assert result.stdout == (
            f"machine '{name}': cpus 1 → 2, memory 1G → 1536M, disk 8G → 10G (applies at the next start)\n"
        )
        started = cli(home, "start", name)
        assert started.returncode == 0, started.stderr
        with home_env(home):
            assert _guest(name, "nproc").strip() == "2"
            total = int(_guest(name, "free -b | awk '/^Mem:/ {print $2}'"))
            assert 1200 * MiB < total <= 1536 * MiB, total  # the kernel keeps some; 1G would be < 1 GiB
            # pminit grows the root file system online at boot (resize2fs /dev/vda), on a process of its own
            deadline = time.monotonic() + 120
            while (size := int(_guest(name, "df -B1 --output=size / | tail -1"))) < 9 * GiB:
                assert time.monotonic() < deadline, f"/ is still {size} bytes"
                time.sleep(1)
            assert size <= 10 * GiB

        # running: the change waits for the next start and says so
        pending = cli(home, "set", name, "--cpus", "1")
        assert pending.returncode == 0, pending.stderr
        assert "cpus 2 → 1 (pending: at the next start;" in pending.stdout
        shown = json.loads(cli(home, "inspect", name).stdout)
        assert shown["cpus"] == 1 and shown["pending"] == [{"field": "cpus", "old": "2", "new": "1"}]
        assert shown["pending_summary"] == "pending: cpus 2 → 1 (at next start)"
        assert "running, pending: cpus 2 → 1 (at next start)" in cli(home, "list").stdout
        with home_env(home):
            assert _guest(name, "nproc").strip() == "2"
        stopped = cli(home, "stop", "--timeout", "5", name)  # forced off after 5 s: it is deleted next
        assert stopped.returncode == 0, stopped.stderr
        assert "shutting down instead: the machine's settings changed since it started (cpus 2 → 1)" in (
            stopped.stdout + stopped.stderr
        )
        assert stopped.stdout.strip().endswith(f"machine '{name}' is stopped")
    finally:
        with home_env(home), contextlib.suppress(Exception):
            if machines.exists(name):
                machines.delete(name, force=True)
        shutil.rmtree(home, ignore_errors=True)
