"""Issue 12, points 2 and 6: Docker's seccomp allowlist in every default container, custom profiles sent as
the docker CLI sends them, and `--init` running with the container's capabilities and filter.

The syscalls busybox cannot make come from tests/support/seccomp_probe.c, built static here and bind-mounted
into the container. Each attack is checked against `seccomp=unconfined` too, so a test that passes only
because the kernel or the capability set refuses the call would show up.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agent import Agent, running_agent

B = "pymachine/busybox"
PROBE_SRC = Path(__file__).resolve().parents[1] / "support" / "seccomp_probe.c"
EPERM, ENOSYS, EFAULT = f"E{errno.EPERM}", f"E{errno.ENOSYS}", f"E{errno.EFAULT}"
# Docker's default container: denied by the profile, with the errno Docker gives.
DENIED = {
    "io_uring_setup": EPERM,  # Docker >= 25 dropped io_uring_* from the allowlist
    "keyctl": EPERM,
    "unshare_user": EPERM,
    "clone_newuser": EPERM,
    "clone3": ENOSYS,  # so that libc falls back to clone, whose flags the filter can read
    "mount": EPERM,  # EFAULT without the filter: the kernel reads the bad fstype pointer before any check
    "vsock": EPERM,
    "vsock_high": EPERM,  # AF_VSOCK with high bits set, which the kernel truncates to an int
    "personality_norandom": EPERM,
}
ALLOWED = ("clone_plain", "inet", "personality0", "personality_query")


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build tests/support/seccomp_probe.c (apt-get install gcc libc6-dev)")
    d = tmp_path_factory.mktemp("probe")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "probe"), str(PROBE_SRC)], check=True)
    return d


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(Path(tmp_path_factory.mktemp("agent"))) as a:
        a.load_busybox()
        yield a


def probe(agent: Agent, probe_dir: Path, names: list[str], *opts: str) -> dict[str, str]:
    out = agent.docker("run", "--rm", "-v", f"{probe_dir}:/probe:ro", *opts, B, "/probe/probe", *names).stdout
    return dict(line.split() for line in out.splitlines())


def write_profile(tmp_path: Path, profile: dict) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile, indent=2))
    return path


def _status(text: str, field: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(field + ":"))


DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}],
}


def test_default_container_is_refused_the_kernel_attack_surface(agent: Agent, probe_dir: Path) -> None:
    got = probe(agent, probe_dir, [*DENIED, *ALLOWED])
    assert {k: got[k] for k in DENIED} == DENIED, got
    assert {k: got[k] for k in ALLOWED} == dict.fromkeys(ALLOWED, "OK"), got
    # ordinary programs work under the allowlist
    out = agent.docker("run", "--rm", B, "sh", "-c", "grep Seccomp: /proc/self/status; mkdir /d && ls -d /d")
    assert out.stdout.split() == ["Seccomp:", "2", "/d"], out


def test_unconfined_lets_the_same_calls_through(agent: Agent, probe_dir: Path) -> None:
    # Without the filter the same calls reach the kernel: what stopped them above was the profile.
    got = probe(agent, probe_dir, [*DENIED, *ALLOWED], "--security-opt", "seccomp=unconfined")
    assert got["keyctl"] == "OK" and got["personality_norandom"] == "OK", got
    assert got["mount"] == EFAULT and got["clone3"] == "OK", got
    assert got["io_uring_setup"] == "OK", got
    assert got["vsock"] != EPERM, got  # OK, or EAFNOSUPPORT where the vsock module is absent


def test_capabilities_unlock_their_syscall_groups(agent: Agent, probe_dir: Path) -> None:
    # CAP_SYS_ADMIN unlocks mount, unshare, clone with namespace flags (Docker's `includes`), never io_uring
    got = probe(
        agent, probe_dir, ["mount", "unshare_user", "clone3", "io_uring_setup"], "--cap-add", "SYS_ADMIN"
    )
    assert got == {"mount": EFAULT, "unshare_user": "OK", "clone3": "OK", "io_uring_setup": EPERM}, got


def test_privileged_runs_without_a_filter(agent: Agent) -> None:
    out = agent.docker("run", "--rm", "--privileged", B, "grep", "Seccomp:", "/proc/self/status").stdout
    assert out.split() == ["Seccomp:", "0"]


def test_custom_profile_from_the_cli_denies_mkdir(agent: Agent, tmp_path: Path) -> None:
    path = write_profile(tmp_path, DENY_MKDIR)
    opt = f"seccomp={path}"
    run = agent.docker("run", "--rm", "--security-opt", opt, B, "mkdir", "/x", check=False)
    assert run.returncode != 0 and "Operation not permitted" in run.stderr, run
    # what the profile allows works, io_uring included (the user's profile replaces Docker's)
    ok = agent.docker("run", "--rm", "--security-opt", opt, B, "sh", "-c", "touch /y && ls /y")
    assert ok.stdout.strip() == "/y"
    # exec in such a container gets the same filter
    cid = agent.docker("run", "-d", "--security-opt", opt, B, "sleep", "300").stdout.strip()
    try:
        ex = agent.docker("exec", cid, "mkdir", "/z", check=False)
        assert ex.returncode != 0 and "Operation not permitted" in ex.stderr, ex
        assert agent.docker("exec", cid, "touch", "/z").returncode == 0
    finally:
        agent.docker("rm", "-f", cid)


def test_exec_in_a_default_container_gets_the_default_filter(agent: Agent, probe_dir: Path) -> None:
    cid = agent.docker("run", "-d", "-v", f"{probe_dir}:/probe:ro", B, "sleep", "300").stdout.strip()
    try:
        out = agent.docker("exec", cid, "/probe/probe", "keyctl", "io_uring_setup", "inet").stdout
        assert dict(line.split() for line in out.splitlines()) == {
            "keyctl": EPERM,
            "io_uring_setup": EPERM,
            "inet": "OK",
        }
    finally:
        agent.docker("rm", "-f", cid)


def test_privileged_exec_keeps_the_containers_filter(agent: Agent, probe_dir: Path) -> None:
    cid = agent.docker("run", "-d", "-v", f"{probe_dir}:/probe:ro", B, "sleep", "300").stdout.strip()
    try:
        out = agent.docker("exec", "--privileged", cid, "/probe/probe", "keyctl").stdout
        assert out.split() == ["keyctl", EPERM]  # --privileged adds capabilities, not syscalls (runc)
    finally:
        agent.docker("rm", "-f", cid)


@pytest.mark.parametrize(
    "profile, message",
    [
        ("{", "not valid JSON"),
        ('{"defaultAction": "SCMP_ACT_MAYBE"}', "unsupported action"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "mkdir"}', "syscalls must be a list"),
        (
            '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"],'
            ' "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "args index",
        ),
        ("/etc/profile.json", "send the profile's JSON"),
    ],
)
def test_malformed_profile_is_a_400(agent: Agent, profile: str, message: str) -> None:
    body = {"Image": B, "Cmd": ["true"], "HostConfig": {"SecurityOpt": [f"seccomp={profile}"]}}
    status, _, reply = agent.request("POST", "/containers/create", body)
    assert status == 400, (status, reply)
    assert message in json.loads(reply)["message"], reply


def test_malformed_profile_file_from_the_cli(agent: Agent, tmp_path: Path) -> None:
    path = write_profile(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "mkdir"}]})
    run = agent.docker("run", "--rm", "--security-opt", f"seccomp={path}", B, "true", check=False)
    assert run.returncode != 0 and "invalid seccomp profile" in run.stderr, run


def test_unconfined_lets_keyctl_through(agent: Agent, probe_dir: Path) -> None:
    assert probe(agent, probe_dir, ["keyctl"]) == {"keyctl": EPERM}
    assert probe(agent, probe_dir, ["keyctl"], "--security-opt", "seccomp=unconfined") == {"keyctl": "OK"}


@pytest.mark.parametrize("opts", [[], ["--user", "1000"], ["--cap-drop", "ALL", "--cap-add", "CHOWN"]])
def test_init_runs_with_the_containers_capabilities_and_filter(agent: Agent, opts: list[str]) -> None:
    script = "cat /proc/1/status; echo ===; cat /proc/self/status"
    out = agent.docker("run", "--rm", "--init", *opts, B, "sh", "-c", script).stdout
    init, ours = out.split("===")
    assert _status(init, "Pid") == "1" and _status(ours, "Pid") != "1"
    for field in ("CapEff", "CapPrm", "CapBnd", "Uid", "NoNewPrivs", "Seccomp"):
        assert _status(init, field) == _status(ours, field), (field, init, ours)
    assert _status(init, "Seccomp") == "2"


def test_info_names_the_builtin_profile(agent: Agent) -> None:
    status, _, reply = agent.request("GET", "/info")
    assert status == 200 and "name=seccomp,profile=builtin" in json.loads(reply)["SecurityOptions"]
