"""Runtime on this host (root, real namespaces and overlayfs). The host's cgroups are v1, so limits are the vm
tier's job; everything else about running a container is proven here on a busybox rootfs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support.runtime import output, run, spec

from pymachine_agent.runtime import Mount, Runtime, StartError


def test_echo_exit_code_and_streams(rt: Runtime, layer: Path) -> None:
    code, out, err = run(rt, layer, ["sh", "-c", "echo hello; echo oops >&2; exit 7"])
    assert (code, out, err) == (7, "hello\n", "oops\n")


def test_pid1_hostname_and_isolated_process_tree(rt: Runtime, layer: Path) -> None:
    code, out, _ = run(rt, layer, ["sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9]'"],
                       hostname="box1")  # fmt: skip
    assert code == 0
    pid, host, nprocs = out.split()
    assert pid == "1" and host == "box1"
    assert int(nprocs) <= 3  # sh, ls, grep: nothing of the host


def test_env_defaults_like_docker(rt: Runtime, layer: Path) -> None:
    code, out, _ = run(rt, layer, ["env"], env=["FOO=bar"], hostname="h1")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert code == 0
    assert env["FOO"] == "bar"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "h1"
    assert "TERM" not in env


def test_workdir_is_created_and_used(rt: Runtime, layer: Path) -> None:
    assert run(rt, layer, ["pwd"], workdir="/srv/app")[:2] == (0, "/srv/app\n")


def test_user_by_name_and_numbers(rt: Runtime, layer: Path) -> None:
    code, out, _ = run(rt, layer, ["sh", "-c", "id; echo $HOME"], user="app")
    assert code == 0
    # Supplementary groups from /etc/group, as runc sets them (busybox id prints getgroups() only).
    assert out.splitlines()[0] == "uid=1000(app) gid=1000(app) groups=50(staff)"
    assert out.splitlines()[1] == "/home/app"
    assert run(rt, layer, ["id", "-u"], user="1234:50")[1] == "1234\n"
    assert run(rt, layer, ["id", "-g"], user="1234:staff")[1] == "50\n"


def test_unknown_user_fails_the_start(rt: Runtime, layer: Path) -> None:
    s = spec(layer, ["true"], user="nosuchuser")
    rt.create(s)
    with pytest.raises(StartError, match="unable to find user nosuchuser"):
        rt.start(s.id)
    assert rt.inspect(s.id).status == "created"  # it never started: dockerd's `docker ps -a` says Created


def test_missing_executable_is_127_with_dockers_message(rt: Runtime, layer: Path) -> None:
    s = spec(layer, ["no-such-binary"])
    rt.create(s)
    with pytest.raises(StartError, match='exec: "no-such-binary": executable file not found in \\$PATH') as e:
        rt.start(s.id)
    assert e.value.exit_code == 127
    assert (rt.inspect(s.id).status, rt.inspect(s.id).exit_code) == ("created", 127)


def test_a_container_that_ran_once_reads_exited_after_a_failed_restart(rt: Runtime, layer: Path) -> None:
    """Created is only for a container that never started; one that ran and then fails to start again has a
    StartedAt and reads exited, as with dockerd."""
    s = spec(layer, ["/bin/sh", "-c", "rm /bin/sh"])  # its first run removes what a second one would exec
    rt.create(s)
    rt.start(s.id)
    assert rt.wait(s.id).exit_code == 0
    with pytest.raises(StartError):
        rt.start(s.id)
    assert rt.inspect(s.id).status == "exited"


def test_default_capabilities_and_no_new_privs(rt: Runtime, layer: Path) -> None:
    code, out, _ = run(rt, layer, ["grep", "-E", "^(CapEff|CapBnd|CapPrm|NoNewPrivs)", "/proc/self/status"])
    status = dict(re.split(r":\s+", line) for line in out.splitlines())
    assert code == 0
    assert status["CapEff"] == status["CapBnd"] == status["CapPrm"] == "00000000a80425fb"
    assert status["NoNewPrivs"] == "1"


def test_cap_add_drop_and_non_root_has_none(rt: Runtime, layer: Path) -> None:
    out = run(rt, layer, ["grep", "CapEff", "/proc/self/status"], cap_add=["NET_ADMIN"], cap_drop=["CHOWN"])[
        1
    ]
    assert int(out.split()[1], 16) == (0xA80425FB | 1 << 12) & ~1
    out = run(rt, layer, ["grep", "-E", "CapEff|CapBnd", "/proc/self/status"], user="app")[1]
    assert out.split() == ["CapEff:", "0000000000000000", "CapBnd:", "00000000a80425fb"]


def test_masked_and_readonly_proc_paths(rt: Runtime, layer: Path) -> None:
    masked_files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    masked_dirs = [p for p in ("/proc/acpi", "/sys/firmware") if os.path.isdir(p) and os.listdir(p)]
    assert masked_files and masked_dirs, "this host has none of the paths Docker masks"
    script = (
        "".join(f"echo $(wc -c < {p}); " for p in masked_files)
        + "".join(f"echo $(ls {p} | wc -l); " for p in masked_dirs)
        + "echo 1 > /proc/sysrq-trigger && echo SYSRQ-WRITABLE; "
        "echo x > /proc/sys/kernel/hostname && echo SYSCTL-WRITABLE; "
        "touch /sys/kernel/x 2>/dev/null && echo SYS-WRITABLE; "
        "grep -E ' /proc/(sys|irq) ' /proc/mounts | grep -c ' ro,'"
    )
    code, out, _ = run(rt, layer, ["sh", "-c", script])
    lines = out.split()
    assert lines == ["0"] * (len(masked_files) + len(masked_dirs)) + ["2"]


def test_overlay_copy_up_leaves_the_layer_untouched(rt: Runtime, layer: Path) -> None:
    before = (layer / "etc/lower-marker").read_text()
    s = spec(layer, ["sh", "-c", "echo changed > /etc/lower-marker; echo new > /created; rm /bin/vi"])
    rt.create(s)
    rt.start(s.id)
    assert rt.wait(s.id).exit_code == 0
    assert (layer / "etc/lower-marker").read_text() == before
    assert (layer / "bin/vi").is_symlink()
    assert not (layer / "created").exists()
    upper = Path(rt.inspect(s.id).upper_dir)
    assert (upper / "etc/lower-marker").read_text() == "changed\n"
    assert (upper / "created").read_text() == "new\n"
    assert os.stat(upper / "bin/vi", follow_symlinks=False).st_rdev == 0  # a whiteout: char 0/0
    # The writes persist across a restart of the same container.
    rt.start(s.id)
    rt.wait(s.id)
    assert "changed" in output(rt, s.id)[0] or (upper / "etc/lower-marker").read_text() == "changed\n"


def test_nothing_leaks_into_the_host_mount_table(rt: Runtime, layer: Path) -> None:
    s = spec(layer, ["sleep", "30"])
    rt.create(s)
    rt.start(s.id)
    try:
        with open("/proc/self/mounts") as f:
            assert s.id not in f.read()
    finally:
        rt.kill(s.id)
        rt.wait(s.id)


def test_readonly_rootfs_and_mounts(rt: Runtime, layer: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the guest\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    script = (
        "cat /data/in.txt; touch /data/x 2>/dev/null && echo DATA-WRITABLE; "
        "echo v > /vol/written; touch /rootfile 2>/dev/null && echo ROOT-WRITABLE; "
        "echo t > /scratch/t && grep ' /scratch ' /proc/mounts | cut -d' ' -f3"
    )
    code, out, _ = run(
        rt,
        layer,
        ["sh", "-c", script],
        readonly_rootfs=True,
        mounts=[
            Mount("bind", "/data", str(data), readonly=True),
            Mount("volume", "/vol", str(vol)),
            Mount("tmpfs", "/scratch", options=["size=1m"]),
        ],
    )
    assert out.splitlines() == ["from the guest", "tmpfs"]
    assert (vol / "written").read_text() == "v\n"
    assert not (data / "x").exists()


def test_network_none_has_only_loopback_and_hook_runs_before_exec(tmp_path: Path, layer: Path) -> None:
    seen: list[tuple[str, int, str, bool]] = []

    def on_netns(cid: str, pid: int) -> None:
        exe = os.readlink(f"/proc/{pid}/exe")  # still the runtime's python: the user process has not exec'd
        other_ns = os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        seen.append((cid, pid, exe, other_ns))

    torn: list[str] = []
    rt = Runtime(tmp_path / "state", on_netns=on_netns, on_teardown=torn.append)
    try:
        code, out, _ = run(rt, layer, ["cat", "/proc/net/dev"], network="new")
        assert code == 0
        ifaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
        assert ifaces == ["lo"]
        assert len(seen) == 1 and "python" in seen[0][2] and seen[0][3]
        assert torn == [seen[0][0]]
    finally:
        rt.close()


def test_init_reaps_orphans_and_forwards_signals(rt: Runtime, layer: Path) -> None:
    # With --init the user's process is PID 2 and a SIGTERM without a handler ends it (it is not PID 1).
    script = "echo $$; (sleep 0.1 &); sleep 0.3; ps -o stat,comm | grep -c Z"
    code, out, _ = run(rt, layer, ["sh", "-c", script], init=True)
    assert code == 1  # grep -c found no zombie: 0 lines, exit 1
    assert out.split() == ["2", "0"]
    s = spec(layer, ["sleep", "300"], init=True)
    rt.create(s)
    rt.start(s.id)
    rt.stop(s.id, timeout=30)
    assert rt.inspect(s.id).exit_code == 128 + 15


def test_seccomp_denies_user_namespaces_and_keyrings(rt: Runtime, layer: Path) -> None:
    script = (
        "grep Seccomp: /proc/self/status; unshare -U true 2>&1 && echo USERNS-ALLOWED; "
        "unshare -u true 2>/dev/null || echo uts-needs-caps; echo done"
    )
    code, out, _ = run(rt, layer, ["sh", "-c", script])
    lines = out.splitlines()
    assert lines[0].split() == ["Seccomp:", "2"]
    assert "USERNS-ALLOWED" not in out and "Operation not permitted" in lines[1]
    assert lines[-2:] == ["uts-needs-caps", "done"]
    # seccomp=unconfined (and privileged) run without the filter; root may then make a user namespace.
    code, out, _ = run(rt, layer, ["sh", "-c", script], seccomp="unconfined")
    assert out.splitlines()[0].split() == ["Seccomp:", "0"] and "USERNS-ALLOWED" in out


def test_exec_gets_the_same_filter(rt: Runtime, layer: Path) -> None:
    from support.runtime import read_fd_until_exit

    from pymachine_agent.runtime import ExecSpec

    s = spec(layer, ["sleep", "300"])
    rt.create(s)
    rt.start(s.id)
    proc = rt.exec(s.id, ExecSpec(argv=["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true"]))
    out = read_fd_until_exit(proc.stdout, proc)
    assert proc.wait(30) != 0
    assert out.split() == [b"Seccomp:", b"2"]
