"""Runs INSIDE a booted guest (pure cgroup v2) for tests/vm/test_runtime_vm.py: exercises the runtime's
limits and prints one JSON object with what it observed. Stdlib + pymachine_agent only (the guest's Python).

    python3 runtime_guest.py <busybox> <workdir>
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymachine_agent.runtime import ContainerSpec, ExecSpec, Limits, RestartPolicy, Runtime  # noqa: E402

MiB = 1024 * 1024


def build_rootfs(busybox: str, dest: Path) -> Path:
    import subprocess

    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    data = Path(busybox).read_bytes()
    (dest / "bin/busybox").write_bytes(data)
    os.chmod(dest / "bin/busybox", 0o755)
    for rel in subprocess.run([busybox, "--list-full"], capture_output=True, text=True).stdout.split():
        if rel != "bin/busybox" and not (dest / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", dest / rel)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\n")
    return dest


def logs(rt: Runtime, cid: str) -> str:
    return "".join(e.data.decode(errors="replace") for e in rt.logs(cid))


def exec_out(rt: Runtime, cid: str, argv: list[str]) -> str:
    proc = rt.exec(cid, ExecSpec(argv=argv))
    out = b""
    while chunk := os.read(proc.stdout, 65536):  # type: ignore[arg-type]
        out += chunk
    proc.wait(60)
    proc.close()
    return out.decode()


def main() -> None:
    busybox, work = sys.argv[1], Path(sys.argv[2])
    layer = build_rootfs(busybox, work / "rootfs")
    rt = Runtime(work / "state", cgroup_parent="pmtest-rt")
    results: dict[str, object] = {}

    def new(argv: list[str], **kw: object) -> str:
        cid = uuid.uuid4().hex * 2
        rt.create(ContainerSpec(id=cid, name=cid[:10], layers=[str(layer)], argv=argv, network="none", **kw))  # type: ignore[arg-type]
        rt.start(cid)
        return cid

    def scenario(name: str):  # type: ignore[no-untyped-def]
        def wrap(fn):  # type: ignore[no-untyped-def]
            try:
                results[name] = fn()
            except Exception:
                results[name] = {"error": traceback.format_exc()}
            return fn

        return wrap

    @scenario("oom")
    def _oom() -> dict:
        cid = new(["sh", "-c", "cat /sys/fs/cgroup/memory.max; tail /dev/zero"],
                  limits=Limits(memory=48 * MiB, memory_swap=48 * MiB))  # fmt: skip
        res = rt.wait(cid, timeout=300)
        st = rt.inspect(cid)
        return {
            "exit_code": res.exit_code,
            "oom_killed": st.oom_killed,
            "memory_max": logs(rt, cid).split()[0],
        }

    @scenario("pids")
    def _pids() -> dict:
        script = (
            "cat /sys/fs/cgroup/pids.max; i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done; "
            "ls /proc | grep -c '^[0-9]'"
        )
        out = {}
        for name, limit in (("limited", 10), ("unlimited", 0)):
            cid = new(["sh", "-c", script], limits=Limits(pids_limit=limit))
            res = rt.wait(cid, timeout=300)
            out[name] = {"exit_code": res.exit_code, "output": logs(rt, cid).splitlines()}
        return out

    @scenario("cpu")
    def _cpu() -> dict:
        cid = new(["sh", "-c", "while :; do :; done"], limits=Limits(nano_cpus=250_000_000))
        cpu_max = exec_out(rt, cid, ["cat", "/sys/fs/cgroup/cpu.max"]).strip()
        t0 = time.monotonic()
        start = exec_out(rt, cid, ["cat", "/sys/fs/cgroup/cpu.stat"])
        time.sleep(3)
        end = exec_out(rt, cid, ["cat", "/sys/fs/cgroup/cpu.stat"])
        wall = time.monotonic() - t0
        stats = rt.stats(cid)
        rt.kill(cid)
        rt.wait(cid, timeout=60)

        def kv(text: str) -> dict[str, int]:
            return {k: int(v) for k, v in (line.split() for line in text.splitlines())}

        a, b = kv(start), kv(end)
        return {
            "cpu_max": cpu_max,
            "usage_share": (b["usage_usec"] - a["usage_usec"]) / 1e6 / wall,
            "throttled": b["nr_throttled"] - a["nr_throttled"],
            "stats_throttled_periods": stats["cpu_stats"]["throttling_data"]["throttled_periods"],
        }

    @scenario("restart")
    def _restart() -> dict:
        cid = new(["sh", "-c", "echo run; exit 3"], restart_policy=RestartPolicy("on-failure", 2))
        end = time.monotonic() + 120
        while time.monotonic() < end:
            st = rt.inspect(cid)
            if st.restart_count == 2 and st.status == "exited":
                break
            time.sleep(0.2)
        time.sleep(1)
        st = rt.inspect(cid)
        return {"restart_count": st.restart_count, "status": st.status, "exit_code": st.exit_code,
                "runs": logs(rt, cid).count("run")}  # fmt: skip

    @scenario("live")
    def _live() -> dict:
        cid = new(["sleep", "600"], limits=Limits(memory=64 * MiB))
        out: dict[str, object] = {"cgroup": exec_out(rt, cid, ["cat", "/proc/self/cgroup"]).strip()}
        stats = rt.stats(cid)
        out["stats_memory_limit"] = stats["memory_stats"]["limit"]
        out["stats_memory_usage"] = stats["memory_stats"]["usage"]
        out["stats_pids"] = stats["pids_stats"]["current"]
        rt.update(cid, limits=Limits(memory=96 * MiB))
        out["memory_after_update"] = exec_out(rt, cid, ["cat", "/sys/fs/cgroup/memory.max"]).strip()
        rt.pause(cid)
        cg = Path("/sys/fs/cgroup/pmtest-rt") / cid
        out["frozen_events"] = (cg / "cgroup.events").read_text()
        out["paused_status"] = rt.inspect(cid).status
        rt.unpause(cid)
        out["thawed_events"] = (cg / "cgroup.events").read_text()
        out["top"] = len(rt.top(cid)["Processes"])
        rt.stop(cid, timeout=1)
        out["cgroup_removed"] = not cg.exists()
        return out

    @scenario("weights")
    def _weights() -> dict:
        limits = Limits(cpu_shares=512, memory_reservation=16 * MiB, cpuset_cpus="0", io_weight=500)
        cid = new(["sleep", "600"], limits=limits)
        files = ("cpu.weight", "memory.low", "cpuset.cpus", "io.weight")
        script = "; ".join(f"echo {f}=$(cat /sys/fs/cgroup/{f} 2>/dev/null || echo absent)" for f in files)
        out = dict(line.split("=", 1) for line in exec_out(rt, cid, ["sh", "-c", script]).splitlines())
        rt.kill(cid)
        return out

    @scenario("survive")
    def _survive() -> dict:
        # An "agent" process starts a container and is killed -9; a new Runtime on the same state re-attaches.
        import signal
        import subprocess

        state = work / "state-survive"
        cid = "7" * 64
        code = (
            "import sys; from pymachine_agent.runtime import Runtime, ContainerSpec; "
            f"rt = Runtime({str(state)!r}, cgroup_parent='pmtest-rt'); "
            f"rt.create(ContainerSpec(id={cid!r}, name='survivor', layers=[{str(layer)!r}], network='none', "
            "argv=['sh', '-c', 'echo up; trap \"exit 7\" TERM; while true; do sleep 0.1; done'])); "
            f"rt.start({cid!r}); print('started', flush=True); sys.stdin.read()"
        )
        agent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = agent.stdout.readline()  # type: ignore[union-attr]
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        rt2 = Runtime(state, cgroup_parent="pmtest-rt")
        try:
            rt2.reconcile()
            st = rt2.inspect(cid)
            out = {"agent_said": line.decode().strip(), "status_after_reattach": st.status}
            out["cgroup_procs"] = len(
                (Path("/sys/fs/cgroup/pmtest-rt") / cid / "cgroup.procs").read_text().split()
            )
            out["exec"] = exec_out(rt2, cid, ["echo", "inside"]).strip()
            rt2.stop(cid, timeout=20)
            st = rt2.inspect(cid)
            out.update(status_after_stop=st.status, exit_code=st.exit_code, logs=logs(rt2, cid))
            rt2.remove(cid)
            return out
        finally:
            rt2.close()

    for c in rt.list():
        rt.remove(c.id, force=True)
    rt.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
